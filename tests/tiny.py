"The tiny model and run the tests train or build (one place for the sizes that keep a training test to seconds on a CPU), and the environment of the processes tests start."
import os

from laretrieval.config import ExperimentConfig

# an 8-channel audio CNN, a 16-d shared space and a frozen text encoder: the smallest model every component still runs in
TINY_MODEL = dict(audio_width=8, embed_dim=16, text_trainable_layers=0)
# one epoch of batches of 8 on the 40-clip built-in set (28 train, 6 val, 6 test clips)
TINY = dict(builtin_clips=40, epochs=1, batch_size=8, **TINY_MODEL)
# the loss ablation grid the ablate tests run: 2 arms x 2 seeds of the tiny run
LOSS_GRID = {**TINY, 'eval_batch_size': 32, 'loss': ['ntxent', 'sigmoid'], 'seed': [0, 1]}


def tiny(**overrides)->dict:
    "The tiny run's parameters with `overrides` on top."
    return {**TINY, **overrides}


def tiny_config(**overrides)->ExperimentConfig:
    "The tiny run's ExperimentConfig with `overrides` on top."
    return ExperimentConfig(**tiny(**overrides))


def set_args(params:dict)->list[str]:
    "`params` as the command line's `--set name=value` pairs."
    return [a for k, v in params.items() for a in ('--set', f'{k}={v}')]


def offline_env(**extra)->dict:
    "The environment of a laretrieval subprocess: offline (no download), one thread per process, no inherited DDP port; `extra` on top."
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'OMP_NUM_THREADS': '1', **extra}
    env.pop('MASTER_PORT', None)  # a port left by an earlier Fabric launch in this process would be reused
    return env
