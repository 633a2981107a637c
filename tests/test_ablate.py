"Ablation batches through papermill: rows per run, failure isolation, resumption, atomic results."
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from laretrieval.ablate import (run_grid, summarize_arms, format_arms, flatten_metrics, validation_curves, expand_grid, run_id_of,
                                per_query_by_arm, compare_arms, plot_arms)
from laretrieval.experiment import DEFAULT_NOTEBOOK, metric_names
from tiny import LOSS_GRID, tiny


@pytest.fixture(scope='module')
def finished_batch(tmp_path_factory):
    batch = tmp_path_factory.mktemp('batch')
    return batch, run_grid(LOSS_GRID, batch, progress=False)


@pytest.mark.slow  # the batch: 4 papermill runs
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
    # the summary's metrics are every t2a mAP@k and R@k the runs reported, in the table order
    reported = ['t2a_' + name for name in metric_names(metrics['test']['t2a'])]
    assert [c[:-len(' mean')] for c in summary.columns if c.endswith(' mean')] == reported
    for name in reported:
        assert summary[f'{name} n'].tolist() == [2, 2]
        assert summary[f'{name} mean'].tolist() == pytest.approx(results.groupby('arm')[name].mean().tolist())
    assert len(validation_curves(results, batch)) == 4  # one epoch per run


@pytest.mark.slow
def test_rerun_executes_nothing_new(finished_batch):
    batch, results = finished_batch
    again = run_grid(LOSS_GRID, batch, progress=False)
    assert not again['executed'].any()
    pd.testing.assert_frame_equal(again.drop(columns=['executed', 'seconds'], errors='ignore'),
                                  results.drop(columns=['executed', 'seconds'], errors='ignore'), check_dtype=False)


@pytest.mark.slow  # 4 papermill runs
def test_a_failing_run_is_recorded_and_the_batch_goes_on(tmp_path):
    "A notebook variant that fails for one (arm, seed): 3 good rows, 1 failure with its error and cell."
    nb = nbformat.read(DEFAULT_NOTEBOOK, as_version=4)
    check = next(i for i, c in enumerate(nb.cells) if 'params_from_namespace(globals()' in c.source)
    nb.cells.insert(check + 1, nbformat.v4.new_code_cell(
        "if cfg.loss == 'sigmoid' and cfg.seed == 1: raise RuntimeError('injected failure')"))
    broken = tmp_path / 'train_eval.ipynb'
    nbformat.write(nb, broken)
    results = run_grid(LOSS_GRID, tmp_path / 'batch', notebook=broken, progress=False)
    assert (results['status'] == 'done').sum() == 3
    failed = results[results['status'] == 'failed']
    assert len(failed) == 1 and failed.iloc[0]['arm'] == 'loss=sigmoid' and failed.iloc[0]['seed'] == 1
    assert 'injected failure' in failed.iloc[0]['error']
    assert failed.iloc[0]['failed_cell'] >= 1
    failure = json.loads((tmp_path / 'batch' / 'runs' / failed.iloc[0]['run_id'] / 'failure.json').read_text())
    assert 'injected failure' in failure['error']
    assert len(pd.read_csv(tmp_path / 'batch' / 'results.csv')) == 4


def _metrics(map_values:dict, recall_values:dict, n_clips:int=100)->dict:
    "A metrics.json as a run writes it: t2a values as given (mAP@k, R@k), a2t at half of them, chance levels 1/N-ish."
    t2a = {**{f'mAP@{k}': v for k, v in map_values.items()}, **{f'R@{k}': v for k, v in recall_values.items()}, 'median_rank': 7.0}
    t2a.update({f'chance_{k}': int(k.split('@')[1]) / n_clips for k in list(t2a) if '@' in k})
    return dict(test=dict(t2a=t2a, a2t={k: v / 2 for k, v in t2a.items()}), best_epoch=1, n_test_clips=n_clips)


def test_summarize_arms_two_arms_two_seeds_mAP16():
    "Two arms x two seeds: every t2a mAP@k and R@k by default, in k order; t2a_mAP@16 mean and std as computed by hand."
    results = pd.DataFrame({'arm': ['loss=ntxent'] * 2 + ['loss=sigmoid'] * 2, 'seed': [0, 1, 0, 1], 'status': 'done',
                            't2a_R@10': [0.5, 0.6, 0.4, 0.4], 't2a_R@1': [0.1, 0.2, 0.1, 0.1], 't2a_R@5': [0.3, 0.4, 0.2, 0.2],
                            't2a_mAP@16': [0.30, 0.36, 0.20, 0.30], 't2a_mAP@10': [0.28, 0.34, 0.19, 0.27],
                            'a2t_mAP@16': [0.9] * 4, 'chance_t2a_mAP@16': [0.012] * 4, 'chance_t2a_mAP10': [0.011] * 4})
    summary = summarize_arms(results)
    assert summary['arm'].tolist() == ['loss=ntxent', 'loss=sigmoid']
    assert [c for c in summary.columns if c.endswith(' mean')] == ['t2a_mAP@10 mean', 't2a_mAP@16 mean', 't2a_R@1 mean',
                                                                    't2a_R@5 mean', 't2a_R@10 mean']
    # mean (0.30 + 0.36) / 2 = 0.33, (0.20 + 0.30) / 2 = 0.25; sample std of two values = |difference| / sqrt(2)
    assert summary['t2a_mAP@16 mean'].tolist() == pytest.approx([0.33, 0.25], abs=1e-12)
    assert summary['t2a_mAP@16 std'].tolist() == pytest.approx([0.06 / math.sqrt(2), 0.10 / math.sqrt(2)], abs=1e-12)
    assert summary['t2a_mAP@16 n'].tolist() == [2, 2] and summary['runs'].tolist() == [2, 2]
    table = format_arms(summary)
    assert table.columns.tolist() == ['arm', 't2a_mAP@10', 't2a_mAP@16', 't2a_R@1', 't2a_R@5', 't2a_R@10', 'runs', 'failed']
    assert table['t2a_mAP@16'].tolist() == ['0.3300 ± 0.0424', '0.2500 ± 0.0707']
    # an explicit list still picks the columns (and their order); one no run has is an error naming it
    assert format_arms(summarize_arms(results, ['t2a_R@1', 'a2t_mAP@16'])).columns.tolist()[1:3] == ['t2a_R@1', 'a2t_mAP@16']
    with pytest.raises(ValueError, match=r"no column \['t2a_mAP@50'\]"):
        summarize_arms(results, ['t2a_mAP@10', 't2a_mAP@50'])


def test_flatten_metrics_keeps_every_k_and_chance_level():
    "map_ks [1, 5, 10, 16, 50], recall_ks [1, 50]: a column per metric and per chance level, and the old chance column."
    row = flatten_metrics(_metrics({1: 0.1, 5: 0.2, 10: 0.3, 16: 0.35, 50: 0.4}, {1: 0.15, 50: 0.9}))
    assert metric_names(row, 't2a_') == ['t2a_mAP@1', 't2a_mAP@5', 't2a_mAP@10', 't2a_mAP@16', 't2a_mAP@50', 't2a_R@1', 't2a_R@50']
    assert metric_names(row, 'a2t_') == [n.replace('t2a', 'a2t') for n in metric_names(row, 't2a_')]
    assert row['t2a_mAP@16'] == 0.35 and row['a2t_mAP@16'] == 0.175 and row['t2a_median_rank'] == 7.0
    assert row['chance_t2a_mAP@16'] == 0.16 and row['chance_a2t_R@50'] == 0.25 and row['chance_t2a_mAP10'] == 0.1
    assert row['best_epoch'] == 1


@pytest.fixture
def mixed_batch(tmp_path):
    "A finished batch on disk (no training): 2 arms x 2 seeds, one of them an old run that reported mAP@10 and R@k only."
    grid = {'loss': ['ntxent', 'sigmoid'], 'seed': [0, 1], 'epochs': 1}
    values = {('ntxent', 0): (0.20, 0.24), ('ntxent', 1): (0.30, 0.32), ('sigmoid', 0): (0.10, 0.14), ('sigmoid', 1): (0.16, None)}
    per_query = {('ntxent', 0): [1.0, 0.5, 0.5, 0.2], ('ntxent', 1): [1.0, 1.0, 0.5, 0.4], ('sigmoid', 0): [0.5, 0.25, 0.25, 0.1],
                 ('sigmoid', 1): [0.5, 0.5, 0.5, 0.5]}
    for params in expand_grid(grid):
        run = tmp_path / 'runs' / run_id_of(params, ['loss', 'seed']); run.mkdir(parents=True)
        key = (params['loss'], params['seed'])
        map10, map16 = values[key]
        maps = {10: map10} if map16 is None else {10: map10, 16: map16}
        (run / 'metrics.json').write_text(json.dumps(_metrics(maps, {1: 0.1, 5: 0.3, 10: 0.5})))
        columns = {'mAP@10': per_query[key]} if map16 is None else {'mAP@10': per_query[key], 'mAP@16': per_query[key]}
        pd.DataFrame({'query': range(4), 'key': ['a', 'b', 'c', 'd'], **columns}).to_csv(run / 'per_query_t2a.csv', index=False)
    return grid, tmp_path


def test_a_batch_mixing_an_old_run_shows_the_missing_mAP16(mixed_batch):
    "The old run's mAP@16 is missing, not zero: arm sigmoid's mean stands on its one run, and the table says so."
    grid, batch = mixed_batch
    results = run_grid(grid, batch, progress=False)
    assert not results['executed'].any() and (results['status'] == 'done').all()
    assert results['t2a_mAP@16'].isna().tolist() == [False, False, False, True]
    assert results['chance_t2a_mAP@16'].isna().tolist() == [False, False, False, True]
    on_disk = pd.read_csv(batch / 'results.csv')
    assert metric_names(on_disk.columns, 't2a_') == ['t2a_mAP@10', 't2a_mAP@16', 't2a_R@1', 't2a_R@5', 't2a_R@10']
    summary = summarize_arms(on_disk)
    assert summary['t2a_mAP@16 mean'].tolist() == pytest.approx([0.28, 0.14], abs=1e-12)
    assert summary['t2a_mAP@16 n'].tolist() == [2, 1] and summary['t2a_mAP@10 n'].tolist() == [2, 2]
    table = format_arms(summary)
    assert table['t2a_mAP@16'].tolist() == ['0.2800 ± 0.0566', '0.1400 (1 of 2 runs)']
    assert table['t2a_mAP@10'].tolist() == ['0.2500 ± 0.0707', '0.1300 ± 0.0424']


def test_paired_test_on_mAP16_and_the_old_run_named(mixed_batch):
    "compare_arms on mAP@16 from the per-query files; asked of a batch holding the old run, it names that run's file."
    grid, batch = mixed_batch
    results = run_grid(grid, batch, progress=False)
    old_run = results['run_id'].iloc[3]
    with pytest.raises(ValueError, match=re.escape(f"{old_run}/per_query_t2a.csv has no column ['mAP@16']")):
        compare_arms(results, batch, 'loss=ntxent', 'loss=sigmoid', metric='mAP@16')
    newer = results[results['run_id'] != old_run]
    assert per_query_by_arm(newer, batch, 'mAP@16')['loss=ntxent'].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.3], abs=1e-12)
    res = compare_arms(newer, batch, 'loss=ntxent', 'loss=sigmoid', metric='mAP@16')
    # per-query differences 0.5, 0.5, 0.25, 0.2: mean 0.3625; all 16 sign flips enumerated, only the observed one as large
    assert res['metric'] == 'mAP@16' and res['diff'] == pytest.approx(0.3625, abs=1e-12)
    assert res['p_value'] == pytest.approx(1 / 16, abs=1e-12)


def test_plot_arms_on_mAP16(mixed_batch):
    "Bars at the arm means of t2a_mAP@16 over the runs that have it."
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    grid, batch = mixed_batch
    ax = plot_arms(run_grid(grid, batch, progress=False), 't2a_mAP@16', ax=plt.figure().gca())
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.28, 0.14], abs=1e-12)
    plt.close('all')


@pytest.mark.slow  # a `laretrieval` process
def test_cli_ablate_table_carries_mAP16(mixed_batch):
    "`laretrieval ablate` on the finished batch prints every k, the partial mean marked."
    import yaml
    grid, batch = mixed_batch
    (batch / 'grid.yaml').write_text(yaml.safe_dump(grid))
    proc = subprocess.run([str(Path(sys.executable).parent / 'laretrieval'), 'ablate', str(batch / 'grid.yaml'), '--batch-dir', str(batch)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header == ['arm', 't2a_mAP@10', 't2a_mAP@16', 't2a_R@1', 't2a_R@5', 't2a_R@10', 'runs', 'failed']
    assert '0.1400 (1 of 2 runs)' in proc.stdout


# --- reliability: unreadable results, killed attempts, two processes on one batch, all runs failing ---
import os
import signal
import threading
import time

import papermill

import laretrieval.ablate as ablate

SMALL_GRID = {'loss': ['ntxent', 'sigmoid'], 'seed': [0, 1], 'epochs': 1}


def _stub_runner(calls:list, seconds:float=0.0, fail:set=frozenset()):
    "Stands in for run_experiment: a log line per call (appended, as training does), a pause, then metrics.json or an error."
    def run(params, run_id, runs_dir, notebook=None, progress=True):
        run_dir = Path(runs_dir) / run_id
        if (run_dir / 'metrics.json').exists():  # as run_experiment: a readable one is a finished run, a partial one goes
            try: json.loads((run_dir / 'metrics.json').read_text())
            except ValueError: (run_dir / 'metrics.json').unlink()
            else: raise FileExistsError(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        calls.append(run_id)
        with open(run_dir / 'log.jsonl', 'a') as f: f.write(json.dumps(dict(run=run_id, thread=threading.current_thread().name)) + '\n')
        time.sleep(seconds)
        if run_id in fail: raise RuntimeError(f'injected failure in {run_id}')
        (run_dir / 'metrics.json').write_text(json.dumps(_metrics({10: 0.3, 16: 0.32}, {1: 0.1}, n_clips=50)))
        return run_dir
    return run


def test_a_partial_metrics_json_is_rerun_and_no_row_is_lost(tmp_path, monkeypatch):
    "Finding 4: 3 finished runs, the middle one's metrics.json cut off: it runs again, results.csv keeps all rows."
    grid = {'seed': [0, 1, 2], 'epochs': 1}
    calls = []
    monkeypatch.setattr(ablate, 'run_experiment', _stub_runner(calls))
    first = run_grid(grid, tmp_path, progress=False)
    assert len(pd.read_csv(tmp_path / 'results.csv')) == 3 and len(calls) == 3
    middle = tmp_path / 'runs' / first['run_id'][1] / 'metrics.json'
    middle.write_text(middle.read_text()[:100])  # what a writer killed mid-write leaves
    calls.clear()
    again = run_grid(grid, tmp_path, progress=False)
    assert calls == [first['run_id'][1]]  # only the unreadable one ran again
    on_disk = pd.read_csv(tmp_path / 'results.csv')
    assert on_disk['run_id'].tolist() == first['run_id'].tolist() and (on_disk['status'] == 'done').all()
    assert again['executed'].tolist() == [False, True, False]


def test_a_partial_metrics_json_whose_rerun_fails_is_marked_failed(tmp_path, monkeypatch):
    "The rerun of the unreadable run fails: that row is failed with the reason, the other two rows stay done."
    grid = {'seed': [0, 1, 2], 'epochs': 1}
    calls = []
    monkeypatch.setattr(ablate, 'run_experiment', _stub_runner(calls))
    first = run_grid(grid, tmp_path, progress=False)
    bad = first['run_id'][1]
    (tmp_path / 'runs' / bad / 'metrics.json').write_text('{\n  "test": {\n    "t2a": {\n      "mAP@10": 0.3,')
    monkeypatch.setattr(ablate, 'run_experiment', _stub_runner(calls, fail={bad}))
    results = run_grid(grid, tmp_path, progress=False)
    assert results['status'].tolist() == ['done', 'failed', 'done']
    assert f'injected failure in {bad}' in results['error'][1]
    on_disk = pd.read_csv(tmp_path / 'results.csv')
    assert on_disk['status'].tolist() == ['done', 'failed', 'done']
    assert on_disk['t2a_mAP@10'][[0, 2]].tolist() == [0.3, 0.3]


def test_an_ablate_point_rerun_after_a_kill_logs_only_its_own_lines(tmp_path, monkeypatch):
    "Finding 5: the killed attempt's log.jsonl and notebook move to attempt-1/, the rerun's log holds only its own lines."
    def notebook(nb, output, parameters, cwd, **kw):
        out = Path(parameters['output_dir'])
        with open(out / 'log.jsonl', 'a') as f: f.write(json.dumps(dict(epoch=1, attempt='rerun')) + '\n')
        (out / 'metrics.json').write_text(json.dumps(_metrics({10: 0.3}, {1: 0.1})))
        Path(output).write_text('{}')
    monkeypatch.setattr(papermill, 'execute_notebook', notebook)
    grid = {'seed': [0], 'epochs': 1}
    run = tmp_path / 'runs' / run_id_of(expand_grid(grid)[0], ['seed']); run.mkdir(parents=True)
    (run / 'log.jsonl').write_text(json.dumps(dict(epoch=1, attempt='killed')) + '\n')
    (run / 'train_eval.ipynb').write_text('{}')
    results = run_grid(grid, tmp_path, progress=False)
    assert results['status'].tolist() == ['done']
    assert [json.loads(line)['attempt'] for line in (run / 'log.jsonl').read_text().splitlines()] == ['rerun']
    assert 'killed' in (run / 'attempt-1' / 'log.jsonl').read_text()


def test_a_point_held_by_another_process_is_skipped_and_reported(tmp_path, monkeypatch):
    "Finding 6: a point whose lock another holder has is not run here; its row says 'running elsewhere'."
    calls = []
    monkeypatch.setattr(ablate, 'run_experiment', _stub_runner(calls))
    points = expand_grid(SMALL_GRID)
    held = run_id_of(points[0], ['loss', 'seed'])
    lock = ablate.try_lock(tmp_path / 'locks' / f'{held}.lock')
    assert lock is not None
    try: results = run_grid(SMALL_GRID, tmp_path, progress=False)
    finally: lock.close()
    assert held not in calls and len(calls) == 3
    assert results['status'].tolist() == ['running elsewhere', 'done', 'done', 'done']
    assert pd.read_csv(tmp_path / 'results.csv')['status'].tolist() == ['running elsewhere', 'done', 'done', 'done']
    results = run_grid(SMALL_GRID, tmp_path, progress=False)  # released: now it runs
    assert calls[-1] == held and (results['status'] == 'done').all()


@pytest.mark.slow  # a second Python process importing laretrieval
def test_a_killed_holder_frees_its_point(tmp_path, monkeypatch):
    "flock dies with its process: a point claimed by a process that was killed is run by the next ablate."
    calls = []
    monkeypatch.setattr(ablate, 'run_experiment', _stub_runner(calls))
    grid = {'seed': [0], 'epochs': 1}
    lock = tmp_path / 'locks' / f"{run_id_of(expand_grid(grid)[0], ['seed'])}.lock"
    holder = subprocess.Popen([sys.executable, '-c', f"import laretrieval.ablate as a, time; f = a.try_lock({str(lock)!r}); "
                               "print(f is not None, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'True'
        assert run_grid(grid, tmp_path, progress=False)['status'].tolist() == ['running elsewhere']
    finally:
        os.kill(holder.pid, signal.SIGKILL); holder.wait()
    assert run_grid(grid, tmp_path, progress=False)['status'].tolist() == ['done'] and len(calls) == 1


def test_two_batches_on_one_dir_run_each_point_once(tmp_path, monkeypatch):
    "Finding 6: two run_grid calls at once on one batch dir: each point runs once, one writer per log, every row in results.csv."
    calls = []
    monkeypatch.setattr(ablate, 'run_experiment', _stub_runner(calls, seconds=0.3))
    grid = {'loss': ['ntxent', 'sigmoid'], 'seed': [0, 1, 2], 'epochs': 1}
    outcomes, errors = {}, []
    def batch(name):
        try: outcomes[name] = run_grid(grid, tmp_path, progress=False)
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=batch, args=(name,), name=name) for name in ('A', 'B')]
    for t in threads: t.start()
    for t in threads: t.join()
    assert errors == []
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 6  # every point exactly once
    writers = set()
    for run_id in set(calls):
        lines = [json.loads(line) for line in (tmp_path / 'runs' / run_id / 'log.jsonl').read_text().splitlines()]
        assert len(lines) == 1, lines
        writers.add(lines[0]['thread'])
    assert writers == {'A', 'B'}  # both did work
    assert (pd.read_csv(tmp_path / 'results.csv')['status'] == 'done').all()
    assert len(pd.read_csv(tmp_path / 'results.csv')) == 6
    for table in outcomes.values():  # each process's table: its points done, the other's done or still running
        assert set(table['status']) <= {'done', 'running elsewhere'} and len(table) == 6


@pytest.mark.slow  # two `laretrieval ablate` processes training
def test_two_ablate_processes_share_a_batch_dir(tmp_path):
    "Two real `laretrieval ablate` processes on a 2-point grid: each point trained once, one clean log each."
    import yaml
    grid = tiny(eval_batch_size=32, seed=[0, 1])
    (tmp_path / 'grid.yaml').write_text(yaml.safe_dump(grid))
    command = [str(Path(sys.executable).parent / 'laretrieval'), 'ablate', str(tmp_path / 'grid.yaml'), '--batch-dir', str(tmp_path / 'batch')]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode in (0, 1), err
        assert p.returncode == 0 or 'running elsewhere' in out + err, out + err
    results = pd.read_csv(tmp_path / 'batch' / 'results.csv')
    assert results['status'].tolist() == ['done', 'done']
    for run_id in results['run_id']:
        run = tmp_path / 'batch' / 'runs' / run_id
        assert not any(p.name.startswith('attempt-') for p in run.iterdir())
        records = [json.loads(line) for line in (run / 'log.jsonl').read_text().splitlines()]
        steps = [r['step'] for r in records if r['kind'] == 'step']
        assert steps == list(range(1, len(steps) + 1)) and len(steps) > 0, steps  # one run's steps, once each
        assert [r['epoch'] for r in records if r['kind'] == 'epoch'] == [1]
