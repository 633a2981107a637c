"Audio and text encoders: PaSST through hear21passt (random weights), the mel front end, MiniLM on real captions."
import csv
import math

import pytest
import torch
import torch.nn.functional as F

from laretrieval.audio import LogMelFrontEnd
from laretrieval.encoders import PaSSTAudioEncoder, PASST_MEL, TextEncoder


@pytest.fixture(scope='module')
def passt():
    torch.manual_seed(0)
    return PaSSTAudioEncoder(pretrained=False)


def test_random_passt_on_a_30s_clip_gives_the_expected_shapes(passt):
    passt.eval()
    wave = torch.randn(1, 30 * 32000) * 0.1
    with torch.no_grad(): feats = passt(wave, torch.tensor([30 * 32000]))
    assert feats.frames.shape == (1, 3 * 99, 768)   # 3 segments x 99 time steps, PaSST-S width
    assert feats.pooled.shape == (1, 768)
    assert feats.mask.all()
    assert torch.isfinite(feats.frames).all() and feats.frames.abs().sum() > 0


def test_passt_pooled_vector_is_the_mean_over_real_segments(passt):
    passt.eval()
    first, second = torch.randn(1, 320000) * 0.1, torch.randn(1, 320000) * 0.1
    with torch.no_grad():
        both = passt(torch.cat([first, second], 1), torch.tensor([640000])).pooled
        alone = [passt(w, torch.tensor([320000])).pooled for w in (first, second)]
    torch.testing.assert_close(both, (alone[0] + alone[1]) / 2, atol=1e-5, rtol=1e-4)


def test_structured_patchout_drops_time_steps_in_training_only(torch_seed=0):
    torch.manual_seed(torch_seed)
    enc = PaSSTAudioEncoder(pretrained=False, max_seconds=10, s_patchout_t=20)
    wave = torch.randn(1, 320000) * 0.1
    enc.train()
    assert enc(wave, torch.tensor([320000])).frames.shape[1] == 99 - 20
    enc.eval()
    with torch.no_grad(): assert enc(wave, torch.tensor([320000])).frames.shape[1] == 99


def test_mel_front_end_matches_hear21passt():
    "Where torchaudio is installed (GPU machines), our front end equals hear21passt's AugmentMelSTFT in eval mode."
    pytest.importorskip('torchaudio')
    from hear21passt.models.preprocess import AugmentMelSTFT
    theirs = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                            fmin=0.0, fmax=None, fmin_aug_range=10, fmax_aug_range=2000).eval()
    ours = LogMelFrontEnd(**PASST_MEL)
    wave = torch.randn(2, 32000 * 3) * 0.1
    torch.testing.assert_close(ours(wave), theirs(wave), atol=1e-5, rtol=0)


@pytest.fixture(scope='module')
def minilm():
    return TextEncoder('minilm', pooling='mean').eval()


def test_captions_are_cut_at_32_tokens(minilm):
    tokens = minilm.tokenize(['a dog barks ' * 40, 'rain'])
    assert tokens['input_ids'].shape == (2, 32)


def test_minilm_places_captions_of_one_clip_closer_than_captions_of_others(shared_data):
    "Real Clotho captions: the 5 captions of a clip are more alike than captions of different clips."
    with open(shared_data / 'clotho_captions' / 'clotho_captions_evaluation.csv', newline='') as f:
        rows = list(csv.DictReader(f))[:60]
    enc = TextEncoder('minilm', pooling='mean').eval()
    captions = [r[f'caption_{k}'] for r in rows for k in range(1, 6)]
    with torch.no_grad(): v = F.normalize(enc(captions), dim=-1)
    sims = (v @ v.T).reshape(60, 5, 60, 5)
    same = torch.stack([sims[i, :, i, :][~torch.eye(5, dtype=torch.bool)].mean() for i in range(60)])
    other = torch.stack([sims[i, :, [j for j in range(60) if j != i]].mean() for i in range(60)])
    assert same.mean() > other.mean() + 0.2, (same.mean(), other.mean())
    assert (same > other).float().mean() > 0.95  # clip by clip, not only on average
