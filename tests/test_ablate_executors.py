"Ablation executors: local worker processes and submitit jobs give the sequential runner's results.csv; killed or requeued points end with the same metrics; two launches never run a point twice."
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from laretrieval.ablate import run_grid, run_submitit, grid_points, batch_status
from laretrieval.experiment import DEFAULT_NOTEBOOK
from tiny import LOSS_GRID

pytestmark = pytest.mark.slow  # worker processes and submitit jobs train the grid; the dry run starts a `laretrieval` process

GRID = {**LOSS_GRID, 'num_threads': 1}
SUBMITIT_LOCAL = dict(gpus=0, cpus=1, max_parallel=2, time_min=10)
WALL = {}  # executor -> seconds, printed by the last test (pytest -s)


def same_results(batch:Path, reference:pd.DataFrame):
    "batch's results.csv equals the reference's, value for value, except who executed it and how long it took."
    table = pd.read_csv(batch / 'results.csv')
    assert table['run_id'].tolist() == reference['run_id'].tolist() and table['run_id'].is_unique
    assert (table['status'] == 'done').all()
    drop = ['executed', 'seconds']
    pd.testing.assert_frame_equal(table.drop(columns=drop), reference.drop(columns=drop), check_exact=True)


def launched(batch:Path)->dict:
    "run id -> how many attempts its folder holds (1: ran once; more: set aside after a kill)."
    return {p.name: 1 + len(list(p.glob('attempt-*'))) for p in (batch / 'runs').iterdir()}


@pytest.fixture(scope='module')
def sequential(tmp_path_factory):
    batch = tmp_path_factory.mktemp('sequential')
    start = time.perf_counter(); run_grid(GRID, batch, progress=False); WALL['sequential'] = time.perf_counter() - start
    return pd.read_csv(batch / 'results.csv')


def test_local_two_workers_give_the_sequential_results(sequential, tmp_path):
    start = time.perf_counter()
    results = run_grid(GRID, tmp_path, executor='local', workers=2, progress=False)
    WALL['local, 2 workers'] = time.perf_counter() - start
    assert results['executed'].all()
    same_results(tmp_path, sequential)
    assert launched(tmp_path) == {run_id: 1 for run_id in sequential['run_id']}


def test_submitit_local_jobs_give_the_sequential_results(sequential, tmp_path):
    "submitit's local executor: real subprocesses through the code path of SLURM (pickled PointJob, submit_array)."
    start = time.perf_counter()
    results = run_grid(GRID, tmp_path, executor='submitit-local', slurm=SUBMITIT_LOCAL, progress=False)
    WALL['submitit local, 2 at once'] = time.perf_counter() - start
    assert results['executed'].all()
    same_results(tmp_path, sequential)
    assert len(list((tmp_path / 'submitit').glob('*/*_submitted.pkl'))) == 4  # one job per point


def _holder_pid(batch:Path, timeout:float=120)->tuple[str, int]:
    "The first point whose notebook has started, and the pid of the process holding its claim."
    deadline = time.time() + timeout
    while time.time() < deadline:
        for lock in sorted((batch / 'locks').glob('loss-*.lock')) if (batch / 'locks').exists() else []:
            text = lock.read_text().split()
            if text and (batch / 'runs' / lock.stem / 'train_eval.ipynb').exists(): return lock.stem, int(text[1])
        time.sleep(0.2)
    raise TimeoutError('no point started')


def test_a_killed_local_worker_point_is_rerun_with_the_same_metrics(sequential, tmp_path):
    "SIGKILL a worker mid-point: the pool's lost points go to fresh workers; every point ends once, with the sequential metrics."
    (tmp_path / 'grid.yaml').write_text(yaml.safe_dump(GRID, sort_keys=False))
    batch = tmp_path / 'batch'
    launch = subprocess.Popen([sys.executable, '-m', 'laretrieval.cli', 'ablate', str(tmp_path / 'grid.yaml'), '--batch-dir', str(batch),
                               '--executor', 'local', '--workers', '2'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_id, pid = _holder_pid(batch)
    time.sleep(2)  # inside the notebook
    os.kill(pid, signal.SIGKILL)
    out, _ = launch.communicate(timeout=300)
    assert launch.returncode == 0, out[-3000:]
    assert 'a worker died' in out and run_id in out
    same_results(batch, sequential)
    assert launched(batch)[run_id] == 2  # the killed attempt was set aside, the rerun finished


def test_a_submitit_job_signalled_like_a_preemption_is_requeued_and_resumes(sequential, tmp_path):
    """USR2 (what SLURM sends before a timeout or preemption) to a job past its first checkpoint: PointJob.checkpoint
    requeues it, the rerun continues from last.ckpt (the trainer's --resume) and ends with the uninterrupted metrics."""
    grid = {**GRID, 'checkpoint_every': 1, 'epochs': 2}  # a checkpoint after every step: there is something to resume
    uninterrupted = run_grid(grid, tmp_path / 'reference', executor='submitit-local', slurm=SUBMITIT_LOCAL, progress=False)
    points = grid_points(grid)
    batch = tmp_path / 'batch'; batch.mkdir()
    jobs = run_submitit(points[:1], batch, DEFAULT_NOTEBOOK, 'local', SUBMITIT_LOCAL, finished=lambda *a: None, wait=False)
    run_dir = batch / 'runs' / points[0][1]
    deadline = time.time() + 120
    while not (run_dir / 'last.ckpt').exists() and time.time() < deadline: time.sleep(0.05)
    pid = int((batch / 'locks' / f'{points[0][1]}.lock').read_text().split()[1])
    os.kill(pid, signal.SIGUSR2)
    jobs[0].result()
    logs = (jobs[0].stdout() or '') + (jobs[0].stderr() or '')
    assert 'Requeued job' in logs and 'continuing from' in logs and '(--resume)' in logs, logs[-3000:]
    (batch / 'grid.json').write_text(json.dumps(grid))
    row = batch_status(batch).iloc[0]
    assert row['status'] == 'done'
    metrics = [c for c in uninterrupted.columns if c.startswith(('t2a_', 'a2t_'))] + ['best_epoch']
    assert row[metrics].tolist() == uninterrupted.iloc[0][metrics].tolist()


def test_two_launches_on_one_batch_dir_run_each_point_once(sequential, tmp_path):
    "A local pool and submitit jobs started together on one batch dir: every point runs once, in one of them."
    (tmp_path / 'grid.yaml').write_text(yaml.safe_dump({**GRID, "slurm": SUBMITIT_LOCAL}, sort_keys=False))
    cmd = [sys.executable, '-m', 'laretrieval.cli', 'ablate', str(tmp_path / 'grid.yaml'), '--batch-dir', str(tmp_path / 'batch')]
    a = subprocess.Popen(cmd + ['--executor', 'local', '--workers', '2'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    b = subprocess.Popen(cmd + ['--executor', 'submitit-local'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outs = [p.communicate(timeout=300)[0] for p in (a, b)]
    assert launched(tmp_path / 'batch') == {run_id: 1 for run_id in sequential['run_id']}, outs
    same_results(tmp_path / 'batch', sequential)
    status = subprocess.run([sys.executable, '-m', 'laretrieval.cli', 'ablate', '--status', str(tmp_path / 'batch')],
                            capture_output=True, text=True, check=True).stdout
    assert status.splitlines()[0] == '4 done / 0 running / 0 failed / 0 pending  (4 points)'


def test_dry_run_writes_the_sbatch_script_of_the_pending_points(tmp_path):
    cmd = [sys.executable, '-m', 'laretrieval.cli', 'ablate', 'data/grids/ablate_loss_slurm.yaml', '--batch-dir', str(tmp_path),
           '--executor', 'slurm', '--dry-run', '--time-min', '600', '--sbatch', 'qos=long']
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent).stdout
    script = (tmp_path / 'submitit' / 'ablate.sbatch').read_text()
    assert script in out and '# 6 pending point(s)' in out
    for line in ('#SBATCH --array=0-5%4', '#SBATCH --gpus-per-node=1', '#SBATCH --cpus-per-task=8', '#SBATCH --partition=gpu',
                 '#SBATCH --time=600', '#SBATCH --account=thesis', '#SBATCH --qos=long', '#SBATCH --signal=USR2@90', '#SBATCH --mem=64GB',
                 'source .venv/bin/activate', f'-m submitit.core._submit {tmp_path}/submitit/%j'):
        assert line in script, line
    assert not (tmp_path / 'runs').exists()  # nothing ran


def test_wall_times(sequential):
    print('\n' + '\n'.join(f'{k}: {v:.1f} s' for k, v in WALL.items()))
    assert 'sequential' in WALL


def test_a_point_of_two_processes_runs_under_torchrun_in_a_job(tmp_path, monkeypatch):
    "devices=2 in a submitit job (one task, as the 4-GPU sbatch script asks): torchrun starts the 2 DDP processes, even with SLURM variables set."
    monkeypatch.setenv('SLURM_NTASKS_PER_NODE', '1')  # what a one-task SLURM step shows: Fabric's launcher would refuse devices=2
    monkeypatch.setenv('SLURM_NTASKS', '1')
    grid = {**{k: v for k, v in GRID.items() if k not in ('loss', 'seed')}, 'devices': 2, 'seed': [0]}
    results = run_grid(grid, tmp_path, executor='submitit-local', slurm=SUBMITIT_LOCAL, progress=False)
    assert list(results['status']) == ['done'], batch_status(tmp_path)
    run_id = results['run_id'][0]
    assert (tmp_path / 'logs' / f'{run_id}.log').exists() and (tmp_path / 'points' / f'{run_id}.json').exists()
    steps = [json.loads(l) for l in (tmp_path / 'runs' / run_id / 'log.jsonl').read_text().splitlines() if '"kind": "step"' in l]
    assert [s["step"] for s in steps] == [1, 2, 3]  # 28 training clips, full batches of 8 (4 per process): 3 steps, each logged once
