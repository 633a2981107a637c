"The experiment notebook run through papermill: parameters, outputs, determinism, bad parameters."
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

from laretrieval.config import ExperimentConfig
from laretrieval.experiment import DEFAULT_NOTEBOOK, run_experiment, load_metrics, metrics_table, metric_names
from laretrieval.metrics import chance_level
from tiny import TINY_MODEL, tiny

# small enough for a test, large enough that the model must learn to pass
SMALL = dict(builtin_clips=300, epochs=4, batch_size=16, audio_width=16, embed_dim=64, text_trainable_layers=1,
             audio_lr=2e-3, text_lr=2e-4, eval_batch_size=64, seed=3)


def test_parameters_cell_mirrors_config():
    "The notebook's parameters cell declares every ExperimentConfig field, with the same default."
    declared = pm.inspect_notebook(str(DEFAULT_NOTEBOOK))
    defaults = ExperimentConfig().to_dict()
    assert sorted(declared) == sorted(defaults)
    for name, spec in declared.items():
        assert eval(spec['default']) == defaults[name], name


@pytest.mark.slow  # two 4-epoch papermill runs
def test_small_run_learns_writes_its_folder_and_repeats_exactly(tmp_path):
    first = run_experiment(SMALL, run_id='a', runs_dir=tmp_path, progress=False)
    for name in ('train_eval.ipynb', 'config.json', 'metrics.json', 'history.csv', 'checkpoint.pt', 'validation_curve.png', 'per_query_t2a.csv'):
        assert (first / name).stat().st_size > 0, name
    assert json.loads((first / 'config.json').read_text())['epochs'] == SMALL['epochs']
    metrics = load_metrics(first)
    t2a = metrics['test']['t2a']
    n_clips = metrics['n_test_clips']
    assert t2a['chance_mAP@10'] == pytest.approx(chance_level(n_clips, 1, 10))
    assert t2a['mAP@10'] >= 5 * t2a['chance_mAP@10'], t2a
    assert metric_names(t2a) == metric_names(metrics['test']['a2t']) == ['mAP@10', 'mAP@16', 'R@1', 'R@5', 'R@10']  # the default ks
    assert t2a['chance_mAP@16'] == pytest.approx(chance_level(n_clips, 1, 16))
    per_query = pd.read_csv(first / 'per_query_t2a.csv')
    assert len(per_query) == metrics['n_test_captions']
    for name in metric_names(t2a):  # the per-query file holds every reported k, and its means are the reported values
        assert per_query[name].mean() == pytest.approx(t2a[name], abs=1e-9), name
    table = metrics_table(metrics).splitlines()
    assert [line.split()[0] for line in table[2:-1]] == metric_names(t2a)
    assert table[3].split()[1] == f"{t2a['mAP@16']:.4f}"
    second = run_experiment(SMALL, run_id='b', runs_dir=tmp_path, progress=False)
    assert load_metrics(second) == metrics
    with pytest.raises(FileExistsError):
        run_experiment(SMALL, run_id='a', runs_dir=tmp_path, progress=False)


def _rows(table:str)->list[list[str]]:
    "A metrics_table's lines split into cells (the rule line and the note included)."
    return [line.split() for line in table.splitlines()]


# a metrics.json with the default ks (keys in another order than the table's), ranks, and chance levels
T2A = {'R@10': 0.45, 'mAP@16': 0.23, 'R@1': 0.12, 'mAP@10': 0.21, 'R@5': 0.34, 'median_rank': 12.0, 'mean_rank': 30.5,
       'chance_mAP@10': 0.0111, 'chance_mAP@16': 0.0123, 'chance_R@1': 0.0074, 'chance_R@5': 0.037, 'chance_R@10': 0.0741}
A2T = {'mAP@10': 0.31, 'mAP@16': 0.33, 'R@1': 0.22, 'R@5': 0.44, 'R@10': 0.55, 'median_rank': 4.0, 'mean_rank': 9.5,
       'chance_mAP@10': 0.0536, 'chance_mAP@16': 0.0612, 'chance_R@1': 0.0015, 'chance_R@5': 0.0074, 'chance_R@10': 0.0148}
METRICS = dict(test=dict(t2a=T2A, a2t=A2T), best_epoch=3, n_test_clips=135, n_test_captions=675)


def test_metrics_table_lists_the_default_ks_in_order():
    "mAP@10, mAP@16, R@1, R@5, R@10: five rows, mAP@k by k then R@k by k, each value and chance level in its column."
    rows = _rows(metrics_table(METRICS))
    assert rows[0] == ['metric', 'text→audio', 'chance', 'audio→text', 'chance']
    assert rows[2:-1] == [['mAP@10', '0.2100', '0.0111', '0.3100', '0.0536'],
                          ['mAP@16', '0.2300', '0.0123', '0.3300', '0.0612'],
                          ['R@1', '0.1200', '0.0074', '0.2200', '0.0015'],
                          ['R@5', '0.3400', '0.0370', '0.4400', '0.0074'],
                          ['R@10', '0.4500', '0.0741', '0.5500', '0.0148']]
    assert metrics_table(METRICS).splitlines()[-1] == 'test split: 135 clips, 675 captions; best epoch 3'


def test_metrics_table_lists_other_ks_by_number():
    "map_ks [5, 50] and recall_ks [1, 50]: mAP@5 before mAP@50 (numbers, not strings), then R@1, R@50; nothing else."
    direction = {'R@50': 0.9, 'mAP@50': 0.4, 'R@1': 0.1, 'mAP@5': 0.3, 'median_rank': 6.0,
                 'chance_mAP@5': 0.01, 'chance_mAP@50': 0.03, 'chance_R@1': 0.002, 'chance_R@50': 0.1}
    rows = _rows(metrics_table(dict(test=dict(t2a=direction, a2t=direction))))
    assert [r[0] for r in rows[2:-1]] == ['mAP@5', 'mAP@50', 'R@1', 'R@50']
    assert rows[3] == ['mAP@50', '0.4000', '0.0300', '0.4000', '0.0300']


def test_metrics_table_of_an_old_run_without_mAP16():
    "A run from before mAP@16 (mAP@10 and R@1/5/10 only) shows its four rows and no mAP@16 row."
    old = {k: v for k, v in T2A.items() if '@16' not in k}
    rows = _rows(metrics_table(dict(test=dict(t2a=old, a2t=old))))
    assert [r[0] for r in rows[2:-1]] == ['mAP@10', 'R@1', 'R@5', 'R@10']


def test_show_prints_every_k(tmp_path):
    "`laretrieval show RUN` prints the table of the run's metrics.json: the mAP@16 row among the five."
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'metrics.json').write_text(json.dumps(METRICS))
    proc = subprocess.run([str(Path(sys.executable).parent / 'laretrieval'), 'show', str(tmp_path / 'run')], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert [r[0] for r in rows[2:7]] == ['mAP@10', 'mAP@16', 'R@1', 'R@5', 'R@10']
    assert rows[3] == ['mAP@16', '0.2300', '0.0123', '0.3300', '0.0612']


@pytest.mark.slow  # a papermill kernel each
@pytest.mark.parametrize('params, name', [(dict(epoch=2), 'epoch'), (dict(epochs='2'), 'epochs'),
                                          (dict(tau=[0.1]), 'tau')])
def test_bad_parameter_stops_the_notebook_in_the_check_cell(tmp_path, params, name):
    "Run with papermill directly (no pre-check): the cell after the parameters stops with the name."
    out = tmp_path / 'out.ipynb'
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(DEFAULT_NOTEBOOK), str(out), parameters={**params, 'output_dir': str(tmp_path / 'run')},
                            progress_bar=False, kernel_name='python3')
    assert repr(name) in str(err.value)
    assert 'params_from_namespace' in err.value.source  # it failed in the check cell, before any work
    assert not (tmp_path / 'run').exists()


def test_run_experiment_rejects_bad_parameters_before_starting(tmp_path):
    with pytest.raises(ValueError, match="'epoch'"):
        run_experiment(dict(epoch=2), run_id='x', runs_dir=tmp_path)
    with pytest.raises(TypeError, match="'batch_size'"):
        run_experiment(dict(batch_size=3.5), run_id='x', runs_dir=tmp_path)
    assert not (tmp_path / 'x').exists()


@pytest.mark.slow  # a `laretrieval` process
def test_cli_names_the_bad_parameter(tmp_path):
    proc = subprocess.run([str(Path(sys.executable).parent / 'laretrieval'), 'experiment', '--set', 'epoch=2', '--runs-dir', str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "'epoch'" in proc.stderr


@pytest.mark.slow  # two epochs on ESC-50 through papermill
def test_model_learns_on_real_esc50_audio(tmp_path, shared_data, monkeypatch):
    "Two epochs on ESC-50 folds 1-3 (real audio): audio→text R@1 on fold 4 over the 50 captions beats 5x chance."
    monkeypatch.setenv('LARETRIEVAL_CACHE_DIR', str(tmp_path / 'cache'))  # the run's kernel inherits it
    run = run_experiment(dict(dataset='esc50', data_dir=str(shared_data / 'esc50'), positives='caption', epochs=2,
                              text_trainable_layers=0, seed=0), run_id='esc50', runs_dir=tmp_path, progress=False)
    metrics = load_metrics(run)
    assert metrics['n_test_clips'] == 400 and metrics['n_test_captions'] == 50
    a2t = metrics['test']['a2t']
    assert a2t['chance_R@1'] == pytest.approx(1 / 50)
    assert a2t['R@1'] >= 5 * a2t['chance_R@1'], a2t


@pytest.mark.slow  # a papermill run
def test_clotho_runs_through_the_experiment_notebook(tmp_path, shared_data, monkeypatch):
    "The real Clotho caption CSVs (first 24 clips of each split) with stand-in audio files named as the CSVs say."
    monkeypatch.setenv('LARETRIEVAL_CACHE_DIR', str(tmp_path / 'cache'))
    import csv
    import numpy as np
    import soundfile as sf
    root = tmp_path / 'clotho'
    for split in ('development', 'validation', 'evaluation'):
        with open(shared_data / 'clotho_captions' / f'clotho_captions_{split}.csv', newline='') as f:
            rows = list(csv.reader(f))[:25]
        (root / split).mkdir(parents=True)
        with open(root / f'clotho_captions_{split}.csv', 'w', newline='') as f: csv.writer(f).writerows(rows)
        for i, row in enumerate(rows[1:]):
            sf.write(root / split / row[0], np.random.default_rng(i).standard_normal(8000).astype('float32') * 0.1, 16000)
    run = run_experiment(dict(dataset='clotho', data_dir=str(root), epochs=1, batch_size=8, **TINY_MODEL, train_items='caption'),
                         run_id='clotho', runs_dir=tmp_path / 'runs', progress=False)
    metrics = load_metrics(run)
    assert metrics['n_test_clips'] == 24 and metrics['n_test_captions'] == 120


@pytest.mark.slow  # two papermill runs
def test_augmentations_switch_on_from_the_experiment_parameters(tmp_path):
    "Gain, SpecAugment and word edits on every training item: the run trains, and differs from the run without them."
    plain = load_metrics(run_experiment(tiny(), run_id='plain', runs_dir=tmp_path, progress=False))
    augmented = load_metrics(run_experiment(tiny(gain_p=1.0, specaug_p=1.0, word_p=1.0), run_id='aug', runs_dir=tmp_path, progress=False))
    assert augmented['test']['t2a']['mAP@10'] != plain['test']['t2a']['mAP@10']


# --- reliability: a partial metrics.json, an earlier attempt's files, the run id (issue: no silent wrong number) ---

def _fake_notebook(log_lines:int=2):
    "Stands in for papermill: appends `log_lines` records to log.jsonl (as the training loop does) and writes metrics.json."
    def execute(notebook, output, parameters, cwd, **kw):
        out = Path(parameters['output_dir'])
        with open(out / 'log.jsonl', 'a') as f:
            for epoch in range(1, log_lines + 1): f.write(json.dumps(dict(epoch=epoch, attempt='new')) + '\n')
        (out / 'metrics.json').write_text(json.dumps(METRICS))
        Path(output).write_text('{}')
    return execute


def test_load_metrics_names_a_partial_file(tmp_path):
    "A metrics.json cut off mid-write: a ValueError naming the file and json's position, not a bare JSONDecodeError."
    (tmp_path / 'metrics.json').write_text(json.dumps(METRICS, indent=2)[:100])
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / 'metrics.json')) + r'.*not valid JSON.*line \d+'):
        load_metrics(tmp_path)
    (tmp_path / 'metrics.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / 'metrics.json')) + ".*no 'test' results"):
        load_metrics(tmp_path)


def test_a_rerun_into_a_killed_attempts_folder_starts_clean(tmp_path, monkeypatch):
    "The killed attempt's log.jsonl, notebook and checkpoint go to attempt-1/; the new log holds only the new run's lines."
    run = tmp_path / 'point'; run.mkdir()
    (run / 'log.jsonl').write_text(json.dumps(dict(epoch=1, attempt='killed')) + '\n')
    (run / 'train_eval.ipynb').write_text('{}'); (run / 'last.ckpt').write_bytes(b'old')
    (run / 'metrics.json').write_text('{"test": {"t2a"')  # cut off by the kill
    monkeypatch.setattr(pm, 'execute_notebook', _fake_notebook())
    run_experiment(dict(epochs=2), run_id='point', runs_dir=tmp_path, progress=False)
    lines = [json.loads(line) for line in (run / 'log.jsonl').read_text().splitlines()]
    assert lines == [dict(epoch=1, attempt='new'), dict(epoch=2, attempt='new')]
    assert not (run / 'last.ckpt').exists() and load_metrics(run) == METRICS
    old = run / 'attempt-1'
    assert sorted(p.name for p in old.iterdir()) == ['last.ckpt', 'log.jsonl', 'metrics.json', 'train_eval.ipynb']
    assert 'killed' in (old / 'log.jsonl').read_text()
    # a second failed attempt goes beside the first, numbered on
    (run / 'metrics.json').unlink(); (run / 'failure.json').write_text('{}')
    run_experiment(dict(epochs=2), run_id='point', runs_dir=tmp_path, progress=False)
    assert sorted(p.name for p in (run / 'attempt-2').iterdir()) == ['failure.json', 'log.jsonl', 'train_eval.ipynb']
    assert len((run / 'log.jsonl').read_text().splitlines()) == 2


@pytest.mark.parametrize('run_id', ['../../x', '../x', 'a/b', 'a\\b', '..', '.', 'ABSOLUTE', ''])
def test_run_id_must_be_a_plain_folder_name(tmp_path, monkeypatch, run_id):
    "A run id with a path in it would write outside runs_dir: rejected naming 'run_id', before anything is created."
    monkeypatch.setattr(pm, 'execute_notebook', _fake_notebook())
    run_id = str(tmp_path / 'abs' / 'x') if run_id == 'ABSOLUTE' else run_id
    runs = tmp_path / 'a' / 'b' / 'runs'
    with pytest.raises(ValueError, match="'run_id'"):
        run_experiment(dict(epochs=1), run_id=run_id, runs_dir=runs, progress=False)
    assert not (tmp_path / 'a').exists() and not (tmp_path / 'x').exists() and not (tmp_path / 'abs').exists()
