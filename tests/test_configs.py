"The shipped recipe and stage files are valid ExperimentConfig parameters and combine as documented."
from pathlib import Path

import yaml

from laretrieval.config import ExperimentConfig

CONFIGS = Path(__file__).resolve().parents[1] / 'data' / 'configs'

def load(*names):
    params = {}
    for name in names: params.update(yaml.safe_load((CONFIGS / name).read_text()) or {})
    return ExperimentConfig.from_dict(params)

def test_recipe_follows_the_reference_defaults():
    cfg = load('clotho_passt_roberta.yaml', 'stage1.yaml')
    assert (cfg.audio_encoder, cfg.text_encoder, cfg.sample_rate, cfg.embed_dim) == ('passt', 'roberta-large', 32000, 1024)
    assert (cfg.epochs, cfg.batch_size, cfg.tau, cfg.audio_lr, cfg.min_lr, cfg.warmup_epochs) == (20, 64, 0.05, 2e-5, 1e-7, 1.0)
    assert cfg.precision == '16-mixed' and cfg.text_dropout == 0.2 and cfg.weight_decay == 0.0

def test_stage_files_switch_on_their_losses():
    two = load('clotho_passt_roberta.yaml', 'stage2.yaml')
    assert two.teachers and two.init_checkpoint and two.contrastive_weight == 0.0 and two.distill_weight == 1.0
    three = load('clotho_passt_roberta.yaml', 'stage3.yaml')
    assert three.cluster_labels and three.teachers and three.cluster_weight > 0


# --- every field's range, checked when the config is built (issue: accepted, then failing late or cryptically) ---
import math
import typing
from dataclasses import fields

import pytest

BAD = [  # (field, value, words the error must carry besides the field's name)
    ('epochs', 0, '>= 1'), ('accumulate_batches', 0, '>= 1'), ('eval_batch_size', 0, '>= 1'), ('batch_size', -4, '>= 1'),
    ('esc50_test_fold', 9, '[1, 5]'), ('esc50_test_fold', 0, '[1, 5]'), ('audio_lr', math.nan, 'finite'),
    ('text_lr', math.inf, 'finite'), ('head_lr', 0.0, '> 0'), ('tau', 0, '> 0'), ('tau', -0.05, '> 0'),
    ('min_lr', -1e-7, '>= 0'), ('weight_decay', math.nan, 'finite'), ('warmup_epochs', -1, '>= 0'), ('grad_clip', -1.0, '>= 0'),
    ('gain_p', 1.5, '[0, 1]'), ('specaug_p', -0.1, '[0, 1]'), ('word_p', math.nan, 'finite'), ('text_dropout', 1.0, '[0, 1)'),
    ('tap_dropout', -0.1, '[0, 1)'), ('devices', 0, '>= 1'), ('builtin_clips', 10, '>= 20'), ('audio_width', 0, '>= 1'),
    ('embed_dim', 0, '>= 1'), ('tap_dim', 0, '>= 1'), ('max_text_tokens', 0, '>= 1'), ('sample_rate', 0, '>= 1'),
    ('checkpoint_every', -1, '>= 0'), ('audio_blocks', -1, '>= 0'), ('s_patchout_t', -2, '>= 0'), ('num_threads', -1, '>= 0'),
    ('text_trainable_layers', -2, '>= -1'), ('seed', -1, '[0, 4294967295]'), ('data_seed', 2 ** 32, '[0, 4294967295]'),
    ('contrastive_weight', -1.0, '>= 0'), ('sigmoid_b_init', -math.inf, 'finite'),
    ('dataset', 'audioset', "'builtin', 'esc50', 'clotho'"), ('positives', 'class', "'clip', 'caption'"),
    ('train_items', 'captions', "'clip', 'caption'"), ('audio_encoder', 'beatz', "'cnn', 'passt', 'atst_frame', 'beats'"),
    ('text_pooling', 'cls', "'mean', 'first'"), ('pooling', 'max', "'mean', 'tap'"), ('loss', 'infonce', "'ntxent', 'sigmoid'"),
    ('precision', 'fp16', "'32-true', 'bf16-mixed', '16-mixed'"), ('device', 'gpu', 'device'),
]

@pytest.mark.parametrize('name, value, allowed', BAD, ids=[f'{n}={v}' for n, v, _ in BAD])
def test_out_of_range_value_is_refused_naming_field_value_and_range(name, value, allowed):
    with pytest.raises(ValueError) as err:
        ExperimentConfig.from_dict({name: value})
    message = str(err.value)
    assert f"'{name}'" in message and repr(value) in message and allowed in message, message
    with pytest.raises(ValueError, match=f"'{name}'"):  # built directly, too: the check is the dataclass's own
        ExperimentConfig(**{name: value})


def test_edge_values_and_ints_for_floats_are_accepted():
    cfg = ExperimentConfig.from_dict(dict(epochs=1, tau=1, audio_lr=1, min_lr=0, gain_p=1, text_dropout=0, esc50_test_fold=5,
                                          text_trainable_layers=-1, warmup_epochs=0, contrastive_weight=0, seed=2 ** 32 - 1,
                                          builtin_clips=20, device='cuda:1', precision='bf16-mixed', dataset='esc50'))
    assert (cfg.tau, cfg.audio_lr, cfg.min_lr) == (1, 1, 0)
    assert ExperimentConfig.from_dict(dict(device='', sigmoid_b_init=-10)).device == ''


def test_every_numeric_and_choice_field_has_a_rule():
    "A field added later without a range fails here, so no number goes unchecked."
    from laretrieval.config import FIELD_RANGES, FIELD_CHOICES
    hints = typing.get_type_hints(ExperimentConfig)
    numeric = {f.name for f in fields(ExperimentConfig) if hints[f.name] in (int, float)}
    assert set(FIELD_RANGES) == numeric
    assert set(FIELD_CHOICES) <= {f.name for f in fields(ExperimentConfig) if hints[f.name] is str}
    for name, options in FIELD_CHOICES.items(): assert getattr(ExperimentConfig(), name) in options, name


def test_the_shipped_configs_pass_the_range_checks():
    for path in sorted(CONFIGS.glob('*.yaml')):
        ExperimentConfig.from_dict(yaml.safe_load(path.read_text()) or {})


def test_the_shipped_grids_expand_to_valid_configs():
    "data/grids/*.yaml are `laretrieval ablate` grids: lists are axes, a `slurm:` mapping holds the cluster options."
    from laretrieval.ablate import expand_grid
    grids = sorted((CONFIGS.parent / 'grids').glob('*.yaml'))
    assert grids
    for path in grids:
        grid = yaml.safe_load(path.read_text())
        points = expand_grid({k: v for k, v in grid.items() if k != 'slurm'})  # every point checked as an ExperimentConfig
        assert len(points) == 6 and {p['loss'] for p in points} == {'ntxent', 'sigmoid'}, path
