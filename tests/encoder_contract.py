"""The checks every audio encoder passes; tests/test_<encoder>.py call them with the encoder built from its config.

- `check_frames`: (B, T, D) frames, a (B, T) mask and a (B, D) clip vector for 1 s / 10 s / 30 s clips, a clip of half the
  length having fewer real frames, and the real frames of a clip not depending on how much padding follows it.
- `check_pooling`: mean pooling and TAP on its frames (masked frames ignored).
- `check_learns`: three epochs of the tiny built-in run with it; the epoch-mean training loss goes down.
- `check_mixup`: spectrogram mix-up through it (`laretrieval.mixup`): lambda 1 gives the first clip, lambda 0 the
  partner, the batch's own clips are untouched, and a mix lies between (its front-end rows found whatever its windowing).
"""
import json

import torch

from laretrieval.encoders import AudioEncoder, AudioFeatures
from laretrieval.pooling import TextAwareAttentionPooling, masked_mean

SECONDS = (1, 10, 30)


@torch.no_grad()
def check_frames(encoder:AudioEncoder, seconds=SECONDS,
                 padding_atol:float|None=1e-4)->dict: # None: skip the padding check (an encoder whose edge frames see the padding)
    "Run a clip of each length beside one of half that length (zero-padded); return {seconds: (frames T, real frames of each clip)}."
    encoder.eval()
    torch.manual_seed(0)
    shapes = {}
    for s in seconds:
        n = int(s * encoder.sample_rate)
        waves = torch.randn(2, n) * 0.1
        waves[1, n // 2:] = 0
        lengths = torch.tensor([n, n // 2])
        out = encoder(waves, lengths)
        assert isinstance(out, AudioFeatures), f"{type(encoder).__name__} returned {type(out).__name__}, not AudioFeatures"
        b, t, d = out.frames.shape
        assert (b, d) == (2, encoder.out_dim), f"{s} s: frames {tuple(out.frames.shape)}, out_dim {encoder.out_dim}"
        assert out.mask.shape == (2, t) and out.mask.dtype == torch.bool, f"{s} s: mask {tuple(out.mask.shape)} {out.mask.dtype}"
        assert out.pooled.shape == (2, d), f"{s} s: pooled {tuple(out.pooled.shape)}"
        assert torch.isfinite(out.frames[out.mask]).all() and torch.isfinite(out.pooled).all(), f"{s} s: non-finite output"
        real = out.mask.sum(1).tolist()
        assert real[0] > real[1] >= 1, f"{s} s: real frames {real}; the half-length clip must have fewer, at least one"
        # the short clip alone (no padding after it) has as many real frames, and the same ones, as inside the padded batch
        alone = encoder(waves[1:, :n // 2], lengths[1:])
        assert int(alone.mask.sum()) == real[1], f"{s} s: {int(alone.mask.sum())} real frames alone, {real[1]} when padded"
        if padding_atol is not None:
            torch.testing.assert_close(alone.frames[0][alone.mask[0]], out.frames[1][out.mask[1]], atol=padding_atol, rtol=1e-3)
        shapes[s] = (t, real)
    return shapes


@torch.no_grad()
def check_pooling(encoder:AudioEncoder, seconds:float=2.0)->None:
    "Mean pooling and TAP over the encoder's frames: finite, (B, D) / (captions, clips), masked frames ignored."
    encoder.eval()
    n = int(seconds * encoder.sample_rate)
    waves, lengths = torch.randn(2, n) * 0.1, torch.tensor([n, n // 2])
    out = encoder(waves, lengths)
    mean = masked_mean(out.frames, out.mask)
    torch.testing.assert_close(mean[1], out.frames[1][out.mask[1]].mean(0))
    tap = TextAwareAttentionPooling(encoder.out_dim, 64).eval()
    text = torch.randn(3, encoder.out_dim)
    scores = tap(text, out.frames, out.mask)
    assert scores.shape == (3, 2) and torch.isfinite(scores).all()
    garbage = out.frames.clone(); garbage[~out.mask] = 1e3  # what sits in padded frames must not matter
    torch.testing.assert_close(tap(text, garbage, out.mask), scores)


def check_learns(tmp_path, epochs:int=3, **overrides)->list[float]:
    "A few epochs of the tiny built-in run with `overrides` (the encoder's name, rate and size); the last epoch's mean loss is below the first's."
    from laretrieval.pipeline import run_training
    from tiny import tiny_config
    cfg = tiny_config(epochs=epochs, **overrides)
    metrics = run_training(cfg, tmp_path / 'run', progress=False)
    rows = [json.loads(line) for line in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()]
    # epoch means: three batches a step each are too few to compare single steps of a random-init transformer
    losses = [r['train_loss'] for r in rows if r.get('kind') == 'epoch']
    assert len(losses) == epochs and losses[-1] < losses[0], f"the mean training loss did not go down over the epochs: {losses}"
    assert 0 <= metrics['test']['t2a']['mAP@10'] <= 1
    return losses


@torch.no_grad()
def check_mixup(encoder:AudioEncoder, seconds:float=2.0, atol:float=1e-4)->dict:
    "Mix-up pairs of 3 clips (two of equal length, one shorter): lambda 1 = the first clip, lambda 0 = the partner; returns distances."
    from laretrieval.mixup import MixPlan, spectrogram_mixup
    encoder.eval()
    torch.manual_seed(0)
    n = int(seconds * encoder.sample_rate)
    lengths = torch.tensor([n, n, n // 2])
    waves = torch.randn(3, n) * 0.1 * (torch.arange(n)[None] < lengths[:, None])
    alone = encoder(waves, lengths).pooled

    def mixed(first, second, lam):
        plan = MixPlan(torch.tensor(first), torch.tensor(second), torch.tensor(lam))
        with spectrogram_mixup(encoder, waves, lengths, plan) as (w, l): out = encoder(w, l).pooled
        torch.testing.assert_close(out[:3], alone, atol=atol, rtol=1e-4)  # the batch's own clips are untouched
        return out[3:]

    ones = mixed([0, 2], [1, 0], [1.0, 1.0])
    torch.testing.assert_close(ones[0], alone[0], atol=atol, rtol=1e-4)   # lambda 1: the first clip
    zeros = mixed([0, 1], [1, 0], [0.0, 0.0])
    torch.testing.assert_close(zeros, alone[[1, 0]], atol=atol, rtol=1e-4)  # lambda 0, equal lengths: the partner
    half = mixed([0], [1], [0.5])[0]
    apart = lambda a, b: float((a - b).norm())
    gap = apart(alone[0], alone[1])  # a tiny random encoder may tell two noise clips apart by little: compare with that
    assert apart(half, alone[0]) > 0.1 * gap and apart(half, alone[1]) > 0.1 * gap, "a mix with lambda 0.5 equals one of its clips"
    return dict(half_to_first=apart(half, alone[0]), half_to_second=apart(half, alone[1]), first_to_second=apart(alone[0], alone[1]))
