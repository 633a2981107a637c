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
