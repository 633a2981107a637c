"Study notebooks run end to end with tiny parameters (the full settings are for a researcher's machine)."
import json
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
from tiny import TINY_MODEL

pytestmark = pytest.mark.slow  # each test trains its grid through papermill

STUDIES = Path(__file__).resolve().parent.parent / 'nbs' / 'studies'
# the study's own parameters set the clips and epochs; its `extra` sets the rest of the tiny run
TINY = dict(batch_size=8, **TINY_MODEL, eval_batch_size=32, tap_dim=16)


@pytest.mark.parametrize('study, arms', [('loss', {'loss=ntxent', 'loss=sigmoid'}),
                                         ('audio_lr', {'audio_lr=0.001', 'audio_lr=0.0002'}),
                                         ('pooling', {'pooling=mean', 'pooling=tap'}),
                                         ('llm_captions', {'original', 'original + generated'})])
def test_study_runs_its_grid_and_aggregates(tmp_path, study, arms):
    pm.execute_notebook(str(STUDIES / f'{study}.ipynb'), str(tmp_path / 'executed.ipynb'), progress_bar=False, kernel_name='python3',
                        parameters=dict(seeds=[0], epochs=1, builtin_clips=40, extra=TINY, batch_dir=str(tmp_path / 'batch')))
    results = pd.read_csv(tmp_path / 'batch' / 'results.csv')
    if study == 'llm_captions': results['arm'] = results['extra_captions'].fillna('').map(lambda p: 'original + generated' if p else 'original')
    assert set(results['arm']) == arms and (results['status'] == 'done').all() and len(results) == 2
    assert (tmp_path / 'batch' / 'study.png').stat().st_size > 0


def test_stages_study_trains_ensembles_distills_and_compares(tmp_path):
    pm.execute_notebook(str(STUDIES / 'stages.ipynb'), str(tmp_path / 'executed.ipynb'), progress_bar=False, kernel_name='python3',
                        parameters=dict(seeds=[0, 1], epochs=1, stage_epochs=1, builtin_clips=40, n_clusters=3, extra=TINY,
                                        batch_dir=str(tmp_path / 'stages')))
    out = tmp_path / 'stages'
    for run in ('stage1-seed0', 'stage1-seed1', 'stage2-distill', 'stage1-continued', 'stage3-clusters'):
        assert (out / run / 'metrics.json').exists(), run
    assert json.loads((out / 'stage2-distill' / 'config.json').read_text())['contrastive_weight'] == 0.0
    log = [json.loads(l) for l in (out / 'stage3-clusters' / 'log.jsonl').read_text().splitlines()]
    assert {'contrastive', 'distillation', 'cluster'} <= set(log[0])
    comparisons = pd.read_csv(out / 'comparisons.csv')
    assert len(comparisons) == 6 and comparisons['p_value'].between(0, 1).all()
    assert (out / 'stages.png').stat().st_size > 0


def write_esc50_layout(root:Path, classes=('dog', 'rain', 'siren', 'clock'), per_fold:int=2, sample_rate:int=16000):
    "A tiny ESC-50 folder (metadata.csv + audio/): per_fold 1 s tones of each class in folds 1-4, a pitch per class."
    import numpy as np, soundfile as sf
    (root / 'audio').mkdir(parents=True)
    rows, t = [], np.arange(sample_rate) / sample_rate
    for fold in range(1, 5):
        for target, category in enumerate(classes):
            for i in range(per_fold):
                name = f'{fold}-{target}{i}-A-{target}.wav'
                sf.write(root / 'audio' / name, 0.3 * np.sin(2 * np.pi * 300 * (target + 1) * t) + 0.01 * np.random.default_rng(fold * 100 + i).standard_normal(sample_rate), sample_rate)
                rows.append((name, fold, target, category))
    pd.DataFrame(rows, columns=['filename', 'fold', 'target', 'category']).to_csv(root / 'metadata.csv', index=False)


def test_encoders_study_times_the_candidates_drops_the_slow_ones_and_compares_the_rest(tmp_path):
    "The ESC-50 layout is a tiny generated one; the per-run budget keeps cnn and the 1-block ATST-Frame and drops PaSST (10x slower per batch at one block)."
    write_esc50_layout(tmp_path / 'esc50')
    executed = tmp_path / 'executed.ipynb'
    pm.execute_notebook(str(STUDIES / 'encoders.ipynb'), str(executed), progress_bar=False, kernel_name='python3',
                        parameters=dict(seeds=[0], epochs=1, candidates=['cnn', 'atst_frame', 'passt'], audio_blocks=1,
                                        data_dir=str(tmp_path / 'esc50'), extra=TINY, batch_dir=str(tmp_path / 'batch'),
                                        max_run_minutes=0.1))
    results = pd.read_csv(tmp_path / 'batch' / 'results.csv')
    assert set(results['arm']) == {'audio_encoder=cnn', 'audio_encoder=atst_frame'} and (results['status'] == 'done').all()
    config = json.loads(next((tmp_path / 'batch' / 'runs').glob('audio_encoder-atst_frame*/config.json')).read_text())
    assert (config['audio_blocks'], config['audio_weights'], config['sample_rate']) == (1, 'none', 16000)
    assert len(pd.read_csv(tmp_path / 'batch' / 'comparisons.csv')) == 2
    assert (tmp_path / 'batch' / 'study.png').stat().st_size > 0


def test_kfold_study_trains_a_member_per_fold_and_ensembles_them(tmp_path):
    pm.execute_notebook(str(STUDIES / 'kfold.ipynb'), str(tmp_path / 'executed.ipynb'), progress_bar=False, kernel_name='python3',
                        parameters=dict(seeds=[0], kfold=2, epochs=1, builtin_clips=40, extra=TINY, batch_dir=str(tmp_path / 'kfold')))
    results = pd.read_csv(tmp_path / 'kfold' / 'results.csv')
    assert sorted(results['fold']) == [0, 1] and (results['status'] == 'done').all() and (results['kfold'] == 2).all()
    ensemble = json.loads((tmp_path / 'kfold' / 'ensemble' / 'ensemble.json').read_text())
    assert len(ensemble['members']) == 2 and ensemble['weights'] == [0.5, 0.5]
    assert (tmp_path / 'kfold' / 'study.png').stat().st_size > 0


def test_fusion_mixup_study_compares_four_named_arms(tmp_path):
    pm.execute_notebook(str(STUDIES / 'fusion_mixup.ipynb'), str(tmp_path / 'executed.ipynb'), progress_bar=False, kernel_name='python3',
                        parameters=dict(seeds=[0], epochs=1, builtin_clips=40, extra=TINY, batch_dir=str(tmp_path / 'batch')))
    results = pd.read_csv(tmp_path / 'batch' / 'results.csv')
    assert list(results['arm']) == ['contrastive', '+ match + mlm', '+ mix-up', '+ match + mlm + mix-up'] and (results['status'] == 'done').all()
    assert results['match_weight'].tolist()[1] == 1.0 and results['mixup_p'].tolist()[2:] == [0.5, 0.5]
    comparisons = pd.read_csv(tmp_path / 'batch' / 'comparisons.csv')
    assert set(comparisons['a']) == {'+ match + mlm', '+ mix-up', '+ match + mlm + mix-up'} and (comparisons['b'] == 'contrastive').all()
    assert (tmp_path / 'batch' / 'study.png').stat().st_size > 0
