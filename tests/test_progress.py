"Long work shows progress: validation and test embedding get bars, and `ablate` shows the run in progress."
import re

import pytest

from tiny import tiny, tiny_config


@pytest.mark.slow
def test_training_shows_embedding_bars(tmp_path, capsys):
    from laretrieval.pipeline import run_training
    run_training(tiny_config(), tmp_path / 'run', progress=True)
    err = capsys.readouterr().err
    # one epoch: the validation split is embedded once, the test split once, each with a bar for clips and texts
    assert err.count('embed clips') >= 2 and err.count('embed texts') >= 2, err[-2000:]


@pytest.mark.slow
def test_ablate_shows_the_run_in_progress(tmp_path, monkeypatch):
    "The runs bar's description follows the running point's log (its epoch, step and loss)."
    from laretrieval import ablate
    shown = []
    real = ablate.watch_run
    monkeypatch.setattr(ablate, 'watch_run', lambda run_dir, show, metric: real(run_dir, lambda s: (shown.append(s), show(s)), metric, every=0.2))
    table = ablate.run_grid({**tiny(), 'epochs': 2, 'seed': [0, 1]}, tmp_path / 'batch', unit='train')
    assert list(table['status']) == ['done', 'done']
    assert shown and all(re.fullmatch(r'seed-\d_\w{8}: epoch \d step \d+ loss \d+\.\d{4}( \| epoch \d val t2a_mAP@10 \d\.\d{4})?', s) for s in shown), shown
    assert {s.split(':')[0].split('_')[0] for s in shown} == {'seed-0', 'seed-1'}  # each run in its turn
