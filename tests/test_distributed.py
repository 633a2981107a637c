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


@pytest.mark.slow
def test_mixup_pairs_of_both_processes_join_the_gathered_batch(tmp_path):
    "2-process DDP with mix-up: the contrastive term is NT-Xent over both batches' items, then both processes' pairs."
    sys.path.insert(0, str(WORKER.parent))
    from mixup_ddp_worker import MIXUP_P, setup
    from laretrieval.losses import positive_mask
    from laretrieval.objectives import build_loss
    from tiny import tiny_config
    done = subprocess.run([sys.executable, str(WORKER.with_name('mixup_ddp_worker.py')), '--out', str(tmp_path / 'step')],
                          capture_output=True, text=True, timeout=600, env=offline_env())
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'step.{r}', weights_only=False) for r in (0, 1)]
    assert all(not r['missing'] for r in ranks) and len(ranks[0]['plan']) == 2  # 4 items per process: 2 pairs each
    cfg = tiny_config(text_trainable_layers=1, mixup_p=MIXUP_P)
    model, dataset = setup(cfg)
    model.eval()
    from laretrieval.datasets import collate
    texts, audios, pair_texts, pair_audios, keys, pair_keys = [], [], [], [], [], []
    with torch.no_grad():
        for r, part in enumerate(ranks):
            batch = collate([dataset[i] for i in part['indices']])
            caps, plan = [c[0] for c in batch['captions']], part['plan']
            both = model.encode_audio_mixed(batch['waveforms'], batch['lengths'], plan).vector
            texts.append(model.encode_text(caps)); audios.append(both[:len(caps)]); keys += batch['clip_ids']
            pair_texts.append(model.encode_text_mixed([caps[i] for i in plan.first], [caps[j] for j in plan.second], plan.lam))
            pair_audios.append(both[len(caps):]); pair_keys += [f'pair {r} {k}' for k in range(len(plan))]
        text, audio = torch.cat(texts + pair_texts), torch.cat(audios + pair_audios)  # every item, then every pair
        all_keys = keys + pair_keys
        expected = build_loss(cfg).contrastive.objective(text @ audio.T, positive_mask(all_keys, all_keys))
    assert ranks[0]['contrastive'] == pytest.approx(expected.item(), rel=1e-5)
    assert ranks[1]['contrastive'] == pytest.approx(expected.item(), rel=1e-5)
