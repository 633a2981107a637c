"Study notebooks run end to end with tiny parameters (the full settings are for a researcher's machine)."
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

STUDIES = Path(__file__).resolve().parent.parent / 'nbs' / 'studies'
TINY = dict(batch_size=8, audio_width=8, embed_dim=16, text_trainable_layers=0, eval_batch_size=32, tap_dim=16)


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
