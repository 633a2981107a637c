"The fusion objectives (laretrieval.fusion): hand-computed cases, two-process DDP against one process, a tiny run."
import json, math, signal, subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tiny import set_args, tiny, offline_env

from laretrieval.encoders import TokenStates
from laretrieval.fusion import AudioTextFusion, MatchTerm, MLMTerm, global_mean, hard_negatives, mask_tokens
from laretrieval.model import AudioEmbedding
from laretrieval.objectives import ScoredBatch

WORKER = Path(__file__).with_name('fusion_ddp_worker.py')


class WordsOnly(nn.Module):
    def __init__(self, vocab, width): super().__init__(); self.embed = nn.Embedding(vocab, width)
    def get_input_embeddings(self): return self.embed


class StandInText(nn.Module):
    "A text encoder stand-in: token states are word embeddings."
    def __init__(self, vocab=12, width=8): super().__init__(); self.model = WordsOnly(vocab, width)
    def hidden_states(self, ids, attention_mask): return self.model.embed(ids)


def small_batch():
    "Three items, items 0 and 2 caption the same clip; scores chosen so every hard negative is known by hand."
    torch.manual_seed(0)
    text = StandInText()
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0], [1, 8, 9, 2]])
    tokens = TokenStates(text.hidden_states(ids, None), ids, (ids != 0).long())
    frames, frame_mask = torch.randn(3, 5, 4), torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [1] * 4 + [0]])
    sim = torch.tensor([[0.5, 0.9, 0.1], [0.3, 0.2, 0.8], [0.6, 0.4, 0.7]])
    clip_ids = ['a', 'b', 'a']
    positives = torch.tensor([[x == y for y in clip_ids] for x in clip_ids])
    return ScoredBatch(sim, positives, None, AudioEmbedding(torch.zeros(3, 4), frames, frame_mask), ['x', 'y', 'z'], clip_ids,
                       tokens=tokens, text_encoder=text)


def fuse_one(fusion, batch, hidden, caption, clip):
    n, t = int(batch.tokens.mask[caption].sum()), int(batch.audio.mask[clip].sum())
    return fusion(hidden[None, :n], batch.tokens.mask[caption][None, :n], batch.audio.frames[clip][None, :t], batch.audio.mask[clip][None, :t])[0]


def test_hard_negatives_are_the_highest_scoring_non_positives_by_hand():
    batch = small_batch()
    neg = hard_negatives(batch.sim, batch.positives, torch.arange(3))
    # caption 0 (clip a): clip 1 is its only non-positive; caption 1 (clip b): clips 0 (0.3), 2 (0.8) -> 2; caption 2: clip 1
    assert neg['clip'].tolist() == [1, 2, 1] and neg['has_clip'].all()
    # clip 0 (a): caption 1 only (0.3); clip 1 (b): captions 0 (0.9), 2 (0.4) -> 0; clip 2 (a): caption 1 (0.8)
    assert neg['caption'].tolist() == [1, 0, 1]


def test_match_term_equals_the_pair_by_pair_cross_entropy():
    batch = small_batch()
    term = MatchTerm(AudioTextFusion(8, 4, heads=2)).eval()
    pairs = [(0, 0, 1), (1, 1, 1), (2, 2, 1), (0, 1, 0), (1, 2, 0), (2, 1, 0), (1, 0, 0), (0, 1, 0), (1, 2, 0)]
    by_hand = sum(-F.log_softmax(term.head(fuse_one(term.fusion, batch, batch.tokens.hidden[i], i, j)[0]), -1)[y] for i, j, y in pairs) / 9
    torch.testing.assert_close(term(batch), by_hand)
    batch.local = slice(1, 3)  # a process holding items 1 and 2: its pairs only, negatives still from the whole batch
    local = [p for p in pairs if p[2] == 1 and p[0] > 0] + [(1, 2, 0), (2, 1, 0), (0, 1, 0), (1, 2, 0)]
    by_hand = sum(-F.log_softmax(term.head(fuse_one(term.fusion, batch, batch.tokens.hidden[i], i, j)[0]), -1)[y] for i, j, y in local) / 6
    torch.testing.assert_close(term(batch), by_hand)


def test_mlm_term_equals_the_token_by_token_cross_entropy():
    batch = small_batch()
    fusion = AudioTextFusion(8, 4, heads=2)
    term = MLMTerm(fusion, vocab_size=12, mask_id=3, special_ids=[0, 1, 2, 3], seed=4).eval()
    masked, targets = mask_tokens(batch.tokens.ids, batch.tokens.mask, [0, 1, 2, 3], 3, 12, torch.Generator().manual_seed(4 * 1_000_003), 0.6)
    losses = []
    for k in range(3):
        fused = fuse_one(fusion, batch, batch.text_encoder.hidden_states(masked[k], None), k, k)
        for pos in (targets[k] != -100).nonzero().flatten().tolist():
            logits = term.transform(fused[pos]) @ batch.text_encoder.model.embed.weight.T + term.bias
            losses.append(-F.log_softmax(logits, -1)[targets[k, pos]])
    assert losses  # the seed masks something
    torch.testing.assert_close(term(batch), sum(losses) / len(losses))


def test_masking_keeps_specials_and_padding_and_draws_bert_shares():
    ids = torch.randint(5, 500, (300, 20)); ids[:, 0] = 1; attn = torch.ones_like(ids); attn[:, 15:] = 0
    masked, targets = mask_tokens(ids, attn, [1], 3, 500, torch.Generator().manual_seed(0), 0.6)
    chosen = targets != -100
    assert not chosen[:, 0].any() and not chosen[:, 15:].any()
    assert abs(chosen[:, 1:15].float().mean() - 0.6) < 0.02
    assert abs((masked[chosen] == 3).float().mean() - 0.8) < 0.02


def test_global_mean_in_one_process():
    assert global_mean(torch.tensor(3.0), 2).item() == 1.5 and global_mean(torch.tensor(0.0), 0).item() == 0.0


def test_terms_are_off_by_default_and_need_the_model():
    from laretrieval.config import ExperimentConfig
    from laretrieval.objectives import build_loss
    cfg = ExperimentConfig()
    assert MatchTerm.from_config(cfg) is None and MLMTerm.from_config(cfg) is None
    assert build_loss(cfg).needs == frozenset()  # the default step keeps no frames and no token states
    with pytest.raises(ValueError, match=r'build_loss\(cfg, model=model\)'): MatchTerm.from_config(ExperimentConfig(match_weight=1.0))
    with pytest.raises(ValueError, match=r'build_loss\(cfg, model=model\)'): MLMTerm.from_config(ExperimentConfig(mlm_weight=1.0))


def run_worker(devices:int, out:Path)->list[dict]:
    out.mkdir()
    done = subprocess.run([sys.executable, str(WORKER), '--devices', str(devices), '--out', str(out)],
                          capture_output=True, text=True, timeout=600, env=offline_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f'rank{r}.pt') for r in range(devices)]


@pytest.mark.slow
def test_two_process_hard_negatives_and_loss_equal_one_process(tmp_path):
    [one] = run_worker(1, tmp_path / 'one')
    two = run_worker(2, tmp_path / 'two')
    assert one['clip_ids'] == two[0]['clip_ids'] + two[1]['clip_ids']  # the same global batch, split in two
    sim, positives = two[0]['sim'], two[0]['positives']
    torch.testing.assert_close(sim, one['sim'], rtol=1e-5, atol=1e-6)
    # each process's negatives are the highest-scoring non-positives of the *gathered* matrix
    masked = sim.masked_fill(positives, float('-inf'))
    for rank, part in enumerate(two):
        items = part['negatives']['items']
        assert items.tolist() == list(range(4 * rank, 4 * rank + 4))
        assert part['negatives']['clip'].tolist() == masked[items].argmax(1).tolist()
        assert part['negatives']['caption'].tolist() == masked[:, items].argmax(0).tolist()
        assert (part['negatives']['clip'] // 4 != rank).any() or (part['negatives']['caption'] // 4 != rank).any()  # some come from the other process
    assert torch.cat([p['negatives']['clip'] for p in two]).tolist() == one['negatives']['clip'].tolist()
    assert torch.cat([p['negatives']['caption'] for p in two]).tolist() == one['negatives']['caption'].tolist()
    assert {'contrastive', 'match', 'mlm', 'total'} == one['terms'].keys()
    for part in two:
        for name, value in one['terms'].items(): assert part['terms'][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    grads = two[0]['grads']
    assert any(n.startswith('loss.match.fusion.') for n in grads) and 'loss.mlm.bias' in grads and any(n.startswith('model.text_encoder.') for n in grads)
    for name, g in one['grads'].items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=lambda m: f'{name}: {m}')


@pytest.mark.slow
def test_cli_train_with_match_and_mlm_lowers_each_term(tmp_path):
    "`laretrieval train --set match_weight=1 --set mlm_weight=1` on the built-in set, end to end; each term falls."
    env = offline_env(LARETRIEVAL_CACHE_DIR=str(tmp_path / 'cache'))
    args = set_args(tiny(epochs=4, match_weight=1, mlm_weight=1, num_threads=1))
    done = subprocess.run([sys.executable, '-m', 'laretrieval.cli', 'train', *args, '--output-dir', str(tmp_path / 'run'), '--quiet'],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [r for r in map(json.loads, (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()) if r['kind'] == 'step']
    assert len(steps) == 12 and all(math.isfinite(s['total']) for s in steps)
    for term in ('contrastive', 'match', 'mlm'):
        first, last = (sum(s[term] for s in part) / 3 for part in (steps[:3], steps[-3:]))
        print(f'{term}: first 3 steps {first:.4f}, last 3 steps {last:.4f}')
        assert last < first, term
    assert json.loads((tmp_path / 'run' / 'metrics.json').read_text())['best_epoch'] >= 1


@pytest.mark.slow
def test_kill_9_then_resume_masks_and_matches_as_an_uninterrupted_run(tmp_path):
    "The masks come from (seed, batches so far), saved with the loss: a resumed run logs the uninterrupted run's terms."
    from laretrieval.train import TIMING_KEYS
    from test_resume import wait_for_step, steps
    params = tiny(builtin_clips=60, epochs=2, checkpoint_every=2, match_weight=1, mlm_weight=1, text_trainable_layers=1, num_threads=1, seed=3)
    command = lambda out, *extra: [sys.executable, '-m', 'laretrieval.cli', 'train', '--quiet', *set_args(params), '--output-dir', str(out), *extra]
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    done = subprocess.run(command(full), capture_output=True, text=True, env=offline_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen(command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=offline_env())
    try: wait_for_step(cut, proc, epoch=2, batch=3)
    finally: proc.send_signal(signal.SIGKILL); proc.wait()
    saved = torch.load(cut / 'last.ckpt', weights_only=False)
    assert saved['position']['epoch'] == 2 and saved['loss']['mlm.batches'] > 0
    resumed = subprocess.run(command(cut, '--resume'), capture_output=True, text=True, env=offline_env(), timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
    assert strip(steps(cut)) == strip(steps(full)) and all('mlm' in r for r in steps(full) if r['kind'] == 'step')
