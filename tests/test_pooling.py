"Text-Aware Attention Pooling against a naive per-pair implementation of the thesis formula (REFERENCE.md)."
import math

import pytest
import torch
import torch.nn.functional as F

from laretrieval.pooling import TextAwareAttentionPooling, masked_mean


def naive_tap(tap, text, frames, mask):
    "Q = LN(c_t)W_q, K = LN(c_a)W_k, V = LN(c_a)W_v, A = softmax(QK^T/sqrt(Dp))V, z = LN(A W_o), score = cos(z, c_t)."
    scores = torch.empty(len(text), len(frames), dtype=text.dtype)
    for i in range(len(text)):
        for j in range(len(frames)):
            c_t, c_a = text[i], frames[j][mask[j]]
            Q, K, V = tap.q(tap.norm_in(c_t)), tap.k(tap.norm_in(c_a)), tap.v(tap.norm_in(c_a))
            A = torch.softmax(Q @ K.T / math.sqrt(Q.shape[-1]), -1) @ V
            scores[i, j] = F.cosine_similarity(tap.norm_out(tap.out(A)), c_t, dim=0)
    return scores


@pytest.mark.parametrize('seed', range(3))
def test_tap_equals_the_formula_pair_by_pair(seed):
    torch.manual_seed(seed)
    tap = TextAwareAttentionPooling(dim=32, attn_dim=64, dropout=0.05).eval()
    with torch.no_grad():
        for ln in (tap.norm_in, tap.norm_out): ln.weight.uniform_(0.5, 1.5); ln.bias.uniform_(-0.3, 0.3)
    text, frames = torch.randn(9, 32), torch.randn(6, 11, 32) * 2 + 0.5
    mask = torch.rand(6, 11) > 0.3; mask[:, 0] = True
    with torch.no_grad():
        want = naive_tap(tap, text, frames, mask)
        torch.testing.assert_close(tap(text, frames, mask), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(tap.score(text, frames, mask, text_chunk=4, clip_chunk=4), want, atol=1e-5, rtol=0)


def test_padded_frames_get_zero_attention_and_do_not_change_the_score():
    torch.manual_seed(0)
    tap = TextAwareAttentionPooling(dim=16, attn_dim=32).eval()
    text, frames = torch.randn(3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    assert tap.attention(text, frames, mask)[:, 1, 2:].abs().max() == 0
    changed = frames.clone(); changed[1, 2:] = 1e3  # garbage in the padding
    with torch.no_grad():
        torch.testing.assert_close(tap.score(text, changed, mask), tap.score(text, frames, mask))


def test_tap_trains_through_its_forward_path():
    torch.manual_seed(0)
    tap = TextAwareAttentionPooling(dim=16, attn_dim=32).train()
    text = torch.randn(4, 16, requires_grad=True); frames = torch.randn(4, 6, 16, requires_grad=True)
    tap(text, frames, torch.ones(4, 6, dtype=torch.bool)).diagonal().sum().backward()
    assert text.grad.abs().sum() > 0 and frames.grad.abs().sum() > 0
    assert all(p.grad is not None for p in tap.parameters())


def test_masked_mean_ignores_padding():
    frames = torch.randn(3, 4, 5); mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    for i in range(3):
        torch.testing.assert_close(masked_mean(frames, mask)[i], frames[i][mask[i]].mean(0))
    with pytest.raises(ValueError, match='no real frames'):
        masked_mean(frames, torch.zeros(3, 4, dtype=torch.bool))
