"Audio augmentation over many random cases: mix length and loudness, SpecAugment mask limits, the dataset wrapper."
import math

import numpy as np
import pytest
import torch

from laretrieval.audio import LogMelFrontEnd
from laretrieval.augment import (AugmentConfig, AugmentDataset, MixPair, band_masks, mix_at_snr, mix_parts, rms,
                                 spec_augment)
from laretrieval.datasets import AudioCaptionDataset, Clip, collate, make_builtin_set, split_clips


@pytest.mark.parametrize('seed', range(5))
def test_mix_has_the_longer_length_and_the_requested_snr(seed):
    g = torch.Generator().manual_seed(seed)
    na, nb = (int(n) for n in torch.randint(1000, 20000, (2,), generator=g))
    a = torch.rand(1, generator=g) * torch.randn(na, generator=g)
    b = torch.rand(1, generator=g) * torch.sin(torch.arange(nb) * 0.05)  # a tone: not the same kind of signal
    snr = float(torch.empty(1).uniform_(-10, 20, generator=g))
    a_part, b_part = mix_parts(a, b, snr)
    mixed = mix_at_snr(a, b, snr)
    assert mixed.shape == (max(na, nb),)
    # by the formula: a + b scaled to RMS(a) / 10^(snr/20), both zero-padded, times the anti-clipping factor
    scale = (a_part[:na] / a).median()
    a_pad, b_pad = torch.zeros(max(na, nb)), torch.zeros(max(na, nb)); a_pad[:na], b_pad[:nb] = a, b
    torch.testing.assert_close(mixed, scale * (a_pad + b_pad * rms(a) / rms(b) * 10 ** (-snr / 20)), rtol=1e-4, atol=1e-6)
    measured = 20 * math.log10(rms(a_part[:na]) / rms(b_part[:nb]))  # RMS over each clip's own samples
    assert measured == pytest.approx(snr, abs=1e-3)
    assert (a_part[na:] == 0).all() and (b_part[nb:] == 0).all()  # padding is silence
    assert mixed.abs().max() <= 1 + 1e-6
    # the a part is a itself unless the mix had to be scaled down to avoid clipping
    ratio = (a_part[:na] / a).median()
    torch.testing.assert_close(a_part[:na], a * ratio)
    assert ratio <= 1 + 1e-6


def test_mix_loudness_of_independent_noises():
    "Independent noises add in power: RMS(mix)^2 = RMS(a)^2 (1 + 10^(-SNR/10)) over the overlap."
    g = torch.Generator().manual_seed(0)
    a, b = 0.05 * torch.randn(64000, generator=g), 0.2 * torch.randn(64000, generator=g)
    for snr in (-6.0, 0.0, 3.0, 12.0):
        expected = rms(a) ** 2 * (1 + 10 ** (-snr / 10))
        assert rms(mix_at_snr(a, b, snr)) ** 2 == pytest.approx(float(expected), rel=0.02)


@pytest.mark.parametrize('seed', range(5))
def test_spec_augment_masks_stay_within_their_limits(seed):
    cfg = AugmentConfig(specaug_p=1.0, freq_masks=1, max_freq_width=7, time_masks=1, max_time_width=11, mask_value=-3.0)
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(20, 101, (64,), generator=g)
    out = spec_augment(torch.zeros(64, 40, 100), cfg, g, frames)
    rows, cols = (out == -3).all(2), (out == -3).all(1)
    for b in range(64):  # one mask per axis: a single run no wider than its limit, inside the real frames
        for mask, limit, size in ((rows[b], 7, 40), (cols[b], 11, int(frames[b]))):
            where = mask.nonzero().flatten()
            assert len(where) <= limit
            if len(where): assert where[-1] - where[0] + 1 == len(where) and where[-1] < size
    assert len({tuple(r.tolist()) for r in rows}) > 10  # iid per example
    widths = rows.sum(1).tolist() + cols.sum(1).tolist()
    assert 0 in widths and 7 in widths  # the width is drawn from 0..max, both ends reached


def test_many_masks_count_per_example():
    g = torch.Generator().manual_seed(3)
    freq = band_masks(500, 64, n_masks=3, max_width=5, generator=g)
    time = band_masks(500, 200, n_masks=4, max_width=20, generator=g, limits=torch.full((500,), 50))
    assert freq.sum(1).max() <= 15 and time.sum(1).max() <= 80 and not time[:, 50:].any()
    assert freq.sum(1).float().mean() > 3  # about 3 masks of mean width 2.5, minus overlaps


def test_specaugment_on_the_front_end_and_probability():
    fe = LogMelFrontEnd(16000, n_mels=32, win_length=400, hop_length=160, n_fft=512)
    mels = fe(torch.randn(400, 1600))
    g = torch.Generator().manual_seed(0)
    out = spec_augment(mels, AugmentConfig(specaug_p=0.3, mask_value=-99.0), g)
    touched = (out == -99).flatten(1).any(1).float().mean().item()
    assert touched == pytest.approx(0.3 * (1 - (1 / 17) ** 2 * (1 / 41) ** 2), abs=0.07)  # width 0 on all four masks is rare
    assert torch.equal(out[(out != -99).flatten(1).all(1)], mels[(out != -99).flatten(1).all(1)])


@pytest.mark.slow  # mixes and collates 28 builtin clips: over 5 s
def test_augment_dataset_mixes_builtin_clips_with_unique_ids():
    clips = split_clips(make_builtin_set(40, seed=0), 'train')
    base = AudioCaptionDataset(clips, 16000, 4.0)
    pairs = [MixPair(f'mix:{a.clip_id}|{b.clip_id}|0', a.clip_id, b.clip_id, 5.0, f'{a.captions[0]} with {b.captions[0]}')
             for a, b in zip(clips, clips[1:] + clips[:1])]
    ds = AugmentDataset(base, AugmentConfig(mix_p=0.5), pairs, seed=0)
    batch = collate([ds[i] for i in range(len(ds))])
    mixed = [cid for cid in batch['clip_ids'] if cid.startswith('mix:')]
    assert 0.2 * len(ds) <= len(mixed) <= 0.8 * len(ds)
    assert not set(mixed) & {c.clip_id for c in clips} and len(set(batch['clip_ids'])) == len(ds)
    for i, cid in enumerate(batch['clip_ids']):
        if cid.startswith('mix:'):
            pair = pairs[i]
            a, b = base.audio(clips[i]), base.audio(clips[(i + 1) % len(clips)])
            torch.testing.assert_close(batch['waveforms'][i], mix_at_snr(a, b, 5.0))
            assert batch['captions'][i] == [pair.caption]
