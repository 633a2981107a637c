"""Dress rehearsal of the shipped recipe: `data/configs/clotho_passt_roberta.yaml` + the stage files exactly as shipped,
on 2 DDP processes (gloo) in bf16-mixed, through the commands a researcher types: stage 1 for two seeds →
`laretrieval ensemble --teacher` → stage 2 (killed with SIGKILL and resumed) → `laretrieval clusters` → stage 3 →
`laretrieval predict` on a DCASE 2025 multi-positive relevance file, which must equal the run's own mAP@16.

Only sizes are overridden (SIZE_OVERRIDES, each named), plus the local data and model folders: a random-weight PaSST-S of
the recipe's arch from hear21passt cut to its first block, a RoBERTa-architecture text model built from a config with a
byte-level BPE tokenizer trained on the captions, and stand-in Clotho v2.1 clips of 15-30 s at 32 kHz."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from text_models import tiny_roberta
from tiny import offline_env, set_args

PROJECT = Path(__file__).resolve().parent.parent
CONFIGS = PROJECT / 'data' / 'configs'
SR = 32000
SPLITS = dict(development=4, validation=3, evaluation=17)  # clips per Clotho split (17 test clips: ranks beyond 16 exist)
WORDS = 'a dog barks while rain falls on the roof birds chirp near water car passes by people talk loudly in hall wind blows'.split()

SIZE_OVERRIDES = dict(   # what this rehearsal changes, besides where the data and the text model are
    passt_pretrained=False,  # random weights: no download here
    audio_blocks=1,          # PaSST-S of the recipe's arch, but only its first transformer block (CPU time)
    embed_dim=32,            # shared space (recipe: 1024)
    epochs=1,                # recipe: 20
    batch_size=8,            # global, 4 per process (recipe: 64)
    eval_batch_size=4,
    devices=2,               # two DDP processes on gloo
    precision='bf16-mixed',  # the recipe's 16-mixed is for GPUs; bf16 autocast runs on the CPU
    num_threads=1,
)


def stand_in_clotho(root:Path, rng:np.random.Generator)->dict:
    "Clotho v2.1 layout: <split>/ audio folders and clotho_captions_<split>.csv, names with spaces and commas, 5 captions."
    captions = {}
    for split, n in SPLITS.items():
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            name = f'{split[:3]} take {i}, field recording.wav'
            seconds = rng.uniform(15, 30)
            t = np.arange(int(seconds * SR)) / SR
            wave = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.02 * rng.standard_normal(len(t))
            sf.write(root / split / name, wave.astype(np.float32), SR, subtype='PCM_16')
            caps = [' '.join(rng.choice(WORDS, size=rng.integers(8, 16))).capitalize() + '.' for _ in range(5)]
            rows.append([name, *caps]); captions[name] = caps
        pd.DataFrame(rows, columns=['file_name', *[f'caption_{k}' for k in range(1, 6)]]).to_csv(root / f'clotho_captions_{split}.csv', index=False)
    return captions


def relevance_file(path:Path, captions:dict, rng:np.random.Generator)->list[str]:
    "DCASE 2025 format: query,audio_filenames; some queries have several relevant clips."
    files = [f for f in captions if f.startswith('eva')]
    rows = []
    for i, f in enumerate(files):
        rows.append((captions[f][0], [f]))
        rows.append((f'{captions[f][1]} and more', sorted({f, files[(i + 1) % len(files)]})))
    pd.DataFrame([(q, repr(fs)) for q, fs in rows], columns=['query', 'audio_filenames']).to_csv(path, index=False)
    return [q for q, _ in rows]


def cli(args:list[str], cwd:Path, env:dict, **kwargs)->subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, '-m', 'laretrieval.cli', *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"laretrieval {' '.join(args[:2])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def overrides(**extra)->list[str]:
    return set_args({**SIZE_OVERRIDES, **extra})


def train_args(stage:str, out:str, **extra)->list[str]:
    return ['train', '--params', str(CONFIGS / 'clotho_passt_roberta.yaml'), '--params', str(CONFIGS / f'{stage}.yaml'),
            *overrides(**extra), '--output-dir', out, '--quiet']


def weights(run:Path)->dict: return torch.load(run / 'checkpoint.pt', map_location='cpu', weights_only=False)['state_dict']


@pytest.mark.slow
def test_dress_rehearsal_of_the_shipped_recipe(tmp_path):
    pytest.importorskip('hear21passt')
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    captions = stand_in_clotho(tmp_path / 'clotho', rng)
    tiny_roberta(tmp_path / 'roberta', [c for caps in captions.values() for c in caps])
    queries = relevance_file(tmp_path / 'relevance.csv', captions, rng)
    env = offline_env(LARETRIEVAL_CACHE_DIR=str(tmp_path / 'cache'), LARETRIEVAL_SETTINGS=str(tmp_path / 'settings.ini'))
    (tmp_path / 'settings.ini').write_text('[laretrieval]\nruns_dir = runs\n')
    data = dict(data_dir=str(tmp_path / 'clotho'), text_encoder=str(tmp_path / 'roberta'))
    runs = tmp_path / 'runs'  # the stage files name runs/stage1-seed0, runs/stage1-ensemble/teacher.pt, ... relative to here

    # stage 1, two seeds; the text encoder is trained whole (text_trainable_layers: -1) under DDP
    for seed in (0, 1): cli(train_args('stage1', f'runs/stage1-seed{seed}', seed=seed, **data), tmp_path, env)
    first = json.loads((runs / 'stage1-seed0' / 'metrics.json').read_text())
    assert first['val_metric'] == 't2a_mAP@16' and {'mAP@10', 'mAP@16', 'R@1', 'R@5', 'R@10'} <= set(first['test']['t2a'])
    history = pd.read_csv(runs / 'stage1-seed0' / 'history.csv')
    assert first['best_epoch'] == int(history.loc[history['val_t2a_mAP@16'].idxmax(), 'epoch'])
    config = json.loads((runs / 'stage1-seed0' / 'config.json').read_text())
    assert (config['passt_arch'], config['text_trainable_layers'], config['precision']) == ('passt_s_p16_s16_128_ap468', -1, 'bf16-mixed')

    cli(['ensemble', 'runs/stage1-seed0', 'runs/stage1-seed1', '--output-dir', 'runs/stage1-ensemble', '--teacher'], tmp_path, env)
    assert (runs / 'stage1-ensemble' / 'teacher.pt').exists()

    # stage 2 as shipped (init_checkpoint and teachers from the runs above), uninterrupted and killed + resumed
    stage2 = dict(epochs=2, checkpoint_every=1, **data)
    cli(train_args('stage2', 'runs/stage2-seed0', **stage2), tmp_path, env)
    killed = subprocess.Popen([sys.executable, '-m', 'laretrieval.cli', *train_args('stage2', 'runs/stage2-resumed', **stage2)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log, deadline = runs / 'stage2-resumed' / 'log.jsonl', time.time() + 600
    while time.time() < deadline and killed.poll() is None:
        if log.exists() and sum('"kind": "step"' in line for line in log.read_text().splitlines()) >= 3: break
        time.sleep(0.1)
    assert killed.poll() is None, 'stage 2 ended before it could be killed'
    os.killpg(killed.pid, signal.SIGKILL); killed.wait()  # both DDP processes, as a cluster kills a job
    assert (runs / 'stage2-resumed' / 'last.ckpt').exists() and not (runs / 'stage2-resumed' / 'metrics.json').exists()
    cli(train_args('stage2', 'runs/stage2-resumed', **stage2)[:-1] + ['--resume', '--quiet'], tmp_path, env)
    uninterrupted, resumed = weights(runs / 'stage2-seed0'), weights(runs / 'stage2-resumed')
    assert uninterrupted.keys() == resumed.keys()
    for name, value in uninterrupted.items(): assert torch.equal(value, resumed[name]), name
    assert json.loads((runs / 'stage2-resumed' / 'metrics.json').read_text()) == json.loads((runs / 'stage2-seed0' / 'metrics.json').read_text())

    # caption clusters of the training captions as training reads them, then stage 3 evaluated on the relevance file
    cli(['clusters', '--params', str(CONFIGS / 'clotho_passt_roberta.yaml'), *overrides(**data), '--n-clusters', '3',
         '--output', 'runs/clusters/labels.csv'], tmp_path, env)
    cli(train_args('stage3', 'runs/stage3-seed0', test_relevance=str(tmp_path / 'relevance.csv'), **data), tmp_path, env)
    final = json.loads((runs / 'stage3-seed0' / 'metrics.json').read_text())
    assert final['relevance'] == str(tmp_path / 'relevance.csv') and final['n_test_captions'] == len(queries)
    steps = [json.loads(l) for l in (runs / 'stage3-seed0' / 'log.jsonl').read_text().splitlines() if '"step"' in l]
    assert {'contrastive', 'distillation', 'cluster'} <= set(steps[0])  # the three terms of stage 3

    # the submission file of the final run, scored: equal to the run's own evaluation
    done = cli(['predict', 'runs/stage3-seed0', '--audio-dir', str(tmp_path / 'clotho' / 'evaluation'), '--queries', 'relevance.csv',
                '--relevance', 'relevance.csv', '--output', 'submission.csv', '-k', '16'], tmp_path, env)
    assert 'mAP@16' in done.stdout
    submission = pd.read_csv(tmp_path / 'submission.csv')
    assert list(submission.columns) == ['caption', *[f'fname_{i}' for i in range(1, 17)]] and submission['caption'].tolist() == queries
    scored = json.loads((tmp_path / 'submission.metrics.json').read_text())
    for name in ('mAP@10', 'mAP@16', 'R@1', 'R@5', 'R@10'):
        assert scored['t2a'][name] == pytest.approx(final['test']['t2a'][name], abs=1e-9), name
    print(f'dress rehearsal: {time.perf_counter() - started:.0f} s')
