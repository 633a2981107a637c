"Ablation batches through papermill: rows per run, failure isolation, resumption, atomic results."
import json

import nbformat
import pandas as pd
import pytest

from laretrieval.ablate import run_grid, summarize_arms, validation_curves
from laretrieval.experiment import DEFAULT_NOTEBOOK

TINY = dict(builtin_clips=40, epochs=1, batch_size=8, audio_width=8, embed_dim=16, text_trainable_layers=0, eval_batch_size=32)
GRID = {**TINY, 'loss': ['ntxent', 'sigmoid'], 'seed': [0, 1]}


@pytest.fixture(scope='module')
def finished_batch(tmp_path_factory):
    batch = tmp_path_factory.mktemp('batch')
    return batch, run_grid(GRID, batch, progress=False)


def test_two_arms_two_seeds_give_four_rows(finished_batch):
    batch, results = finished_batch
    assert len(results) == 4 and (results['status'] == 'done').all() and results['executed'].all()
    on_disk = pd.read_csv(batch / 'results.csv')
    assert on_disk['run_id'].tolist() == results['run_id'].tolist()
    assert sorted(results['arm'].unique()) == ['loss=ntxent', 'loss=sigmoid']
    for run_id in results['run_id']:
        metrics = json.loads((batch / 'runs' / run_id / 'metrics.json').read_text())
        row = results.set_index('run_id').loc[run_id]
        assert row['t2a_mAP@10'] == metrics['test']['t2a']['mAP@10']
    summary = summarize_arms(results)
    assert summary['runs'].tolist() == [2, 2]
    assert len(validation_curves(results, batch)) == 4  # one epoch per run


def test_rerun_executes_nothing_new(finished_batch):
    batch, results = finished_batch
    again = run_grid(GRID, batch, progress=False)
    assert not again['executed'].any()
    pd.testing.assert_frame_equal(again.drop(columns=['executed', 'seconds'], errors='ignore'),
                                  results.drop(columns=['executed', 'seconds'], errors='ignore'), check_dtype=False)


def test_a_failing_run_is_recorded_and_the_batch_goes_on(tmp_path):
    "A notebook variant that fails for one (arm, seed): 3 good rows, 1 failure with its error and cell."
    nb = nbformat.read(DEFAULT_NOTEBOOK, as_version=4)
    check = next(i for i, c in enumerate(nb.cells) if 'params_from_namespace(globals()' in c.source)
    nb.cells.insert(check + 1, nbformat.v4.new_code_cell(
        "if cfg.loss == 'sigmoid' and cfg.seed == 1: raise RuntimeError('injected failure')"))
    broken = tmp_path / 'train_eval.ipynb'
    nbformat.write(nb, broken)
    results = run_grid(GRID, tmp_path / 'batch', notebook=broken, progress=False)
    assert (results['status'] == 'done').sum() == 3
    failed = results[results['status'] == 'failed']
    assert len(failed) == 1 and failed.iloc[0]['arm'] == 'loss=sigmoid' and failed.iloc[0]['seed'] == 1
    assert 'injected failure' in failed.iloc[0]['error']
    assert failed.iloc[0]['failed_cell'] >= 1
    failure = json.loads((tmp_path / 'batch' / 'runs' / failed.iloc[0]['run_id'] / 'failure.json').read_text())
    assert 'injected failure' in failure['error']
    assert len(pd.read_csv(tmp_path / 'batch' / 'results.csv')) == 4
