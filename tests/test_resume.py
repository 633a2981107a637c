"Kill -9 in the middle of an epoch, `laretrieval train --resume`, and the run ends exactly where an uninterrupted one does."
import json, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch
from laretrieval.train import TIMING_KEYS
from tiny import offline_env

CLI = [sys.executable, '-m', 'laretrieval.cli', 'train', '--quiet']
PARAMS = ['builtin_clips=120', 'audio_width=8', 'embed_dim=32', 'text_trainable_layers=1', 'epochs=3', 'batch_size=8',
          'checkpoint_every=2', 'num_threads=1', 'seed=3', 'device=cpu']
ENV = offline_env()

def train_command(out:Path, *extra)->list[str]:
    return [*CLI, *[a for p in PARAMS for a in ('--set', p)], '--output-dir', str(out), *extra]

def steps(run:Path)->list[dict]:
    return [json.loads(l) for l in (run / 'log.jsonl').read_text().splitlines() if l.strip()]

def wait_for_step(run:Path, proc, epoch:int, batch:int, timeout:float=600):
    "Poll the run's log until it reports `batch` of `epoch` (or fail if the process ends first)."
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None: raise AssertionError(f'training ended (code {proc.returncode}) before it could be killed')
        log = run / 'log.jsonl'
        if log.exists():
            for line in log.read_text().splitlines():
                try: r = json.loads(line)
                except json.JSONDecodeError: continue
                if r['kind'] == 'step' and r['epoch'] == epoch and r['batch'] >= batch: return
        time.sleep(0.02)
    raise AssertionError('timed out waiting for the run to reach the kill point')

@pytest.mark.slow
@pytest.mark.parametrize('workers', [0, 2])  # the interrupted run loads in 2 worker processes; the reference never does
def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, workers):
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    done = subprocess.run(train_command(full), capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    loading = ['--set', f'num_workers={workers}']
    proc = subprocess.Popen(train_command(cut, *loading), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try: wait_for_step(cut, proc, epoch=2, batch=5)
    finally: proc.send_signal(signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (cut / 'metrics.json').exists()
    saved = torch.load(cut / 'last.ckpt', weights_only=False)['position']
    assert saved['epoch'] == 2 and 0 < saved['batch'] < 10, saved  # the checkpoint is in the middle of epoch 2
    resumed = subprocess.run(train_command(cut, *loading, '--resume'), capture_output=True, text=True, env=ENV, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert json.loads((cut / 'metrics.json').read_text()) == json.loads((full / 'metrics.json').read_text())
    drop = ['seconds']
    pd.testing.assert_frame_equal(pd.read_csv(cut / 'history.csv').drop(columns=drop), pd.read_csv(full / 'history.csv').drop(columns=drop))
    # the log reads as one run: every step once, with the uninterrupted run's losses and learning rates
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
    assert strip(steps(cut)) == strip(steps(full))
    a = torch.load(cut / 'checkpoint.pt', weights_only=False)['state_dict']; b = torch.load(full / 'checkpoint.pt', weights_only=False)['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in b)
