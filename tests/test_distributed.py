"Two CPU processes under Fabric DDP (gloo) compute the loss and gradients of one process on the concatenated batch."
import json, math, subprocess, sys
from pathlib import Path

import pytest
import torch
from tiny import set_args, tiny, offline_env

WORKER = Path(__file__).with_name('ddp_step_worker.py')

def run_worker(devices:int, variant:str, out:Path)->dict:
    env = offline_env()
    done = subprocess.run([sys.executable, str(WORKER), '--devices', str(devices), '--variant', variant, '--out', str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)

@pytest.mark.slow
@pytest.mark.parametrize('variant', ['stages', 'sigmoid_tap'])
def test_two_process_ddp_equals_one_process_on_the_concatenated_batch(tmp_path, variant):
    one = run_worker(1, variant, tmp_path / 'one.pt')
    two = run_worker(2, variant, tmp_path / 'two.pt')
    assert len(one['clip_ids']) == 8 and len(two['clip_ids']) == 4  # process 0 of two holds half the batch
    assert one['clip_ids'][:4] == two['clip_ids']                   # ... the first half of the one-process batch
    assert one['terms'].keys() == two['terms'].keys()
    if variant == 'stages': assert {'contrastive', 'distillation', 'cluster'} <= one['terms'].keys()
    for name, value in one['terms'].items(): assert two['terms'][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert one['grads'].keys() == two['grads'].keys() and len(one['grads']) > 10
    for name, g in one['grads'].items():
        assert g.abs().max() > 0 or two['grads'][name].abs().max() == 0, name
        torch.testing.assert_close(two['grads'][name], g, rtol=1e-4, atol=1e-6, msg=lambda m: f'{name}: {m}')
    # the loss's own parameters (sigmoid t, b) and parameters after the gather (TAP) are part of the comparison
    if variant == 'sigmoid_tap': assert {'loss.contrastive.objective.t', 'loss.contrastive.objective.b'} <= one['grads'].keys()
    if variant == 'sigmoid_tap': assert any(n.startswith('model.tap.') for n in one['grads'])


@pytest.mark.slow
def test_two_process_ddp_trains_the_whole_text_encoder(tmp_path):
    "The recipe's text_trainable_layers=-1 under Fabric DDP on 2 CPU processes: three optimizer steps on both ranks."
    env = offline_env(LARETRIEVAL_CACHE_DIR=str(tmp_path / 'cache'))
    params = tiny(builtin_clips=36, devices=2, text_trainable_layers=-1, text_pooling='first', num_threads=1)  # 25 training clips: 3 global batches of 8
    args = set_args(params)
    done = subprocess.run([sys.executable, '-m', 'laretrieval.cli', 'train', *args, '--output-dir', str(tmp_path / 'run'), '--quiet'],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()]
    steps = [r for r in log if r['kind'] == 'step']
    assert [s['step'] for s in steps] == [1, 2, 3] and all(math.isfinite(s['total']) for s in steps)
    assert json.loads((tmp_path / 'run' / 'metrics.json').read_text())['best_epoch'] == 1  # process 0 tested after both finished
