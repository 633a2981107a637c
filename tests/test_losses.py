"Each loss against a naive per-element implementation of its formula (REFERENCE.md 'Losses'), in float64."
import math

import pytest
import torch

from laretrieval.losses import NTXentLoss, SigmoidLoss, DistillationLoss, positive_mask, teacher_similarity


def random_batch(seed, n=7, repeats=True):
    "A cosine matrix and the positive mask of a batch in which some clips appear twice (multi-positive)."
    g = torch.Generator().manual_seed(seed)
    ids = [f'c{int(i)}' for i in torch.randint(0, 4 if repeats else 100, (n,), generator=g)]
    if not repeats: ids = [f'c{i}' for i in range(n)]
    sim = (torch.rand(n, n, generator=g, dtype=torch.float64) * 2 - 1)
    return sim, positive_mask(ids, ids), ids


def ntxent_naive(sim, pos, tau):
    n_t, n_a = sim.shape
    sim, pos = sim.tolist(), pos.tolist()
    row_terms, col_terms = [], []
    for i in range(n_t):
        for j in range(n_a):
            if pos[i][j]:
                row_terms.append(math.log(math.exp(sim[i][j] / tau) / sum(math.exp(sim[i][k] / tau) for k in range(n_a))))
                col_terms.append(math.log(math.exp(sim[i][j] / tau) / sum(math.exp(sim[k][j] / tau) for k in range(n_t))))
    return -0.5 * (sum(row_terms) / len(row_terms) + sum(col_terms) / len(col_terms))


def sigmoid_naive(sim, pos, t, b):
    total = 0.0
    for i in range(sim.shape[0]):
        for j in range(sim.shape[1]):
            z = 1.0 if pos[i, j] else -1.0
            total += math.log(1 / (1 + math.exp(-z * (float(sim[i, j]) * math.exp(t) + b))))
    return -total / sim.shape[0]


def distill_naive(sim, teacher, tau):
    n_t, n_a = sim.shape
    sim, teacher = sim.tolist(), teacher.tolist()
    def softmax(values): e = [math.exp(v) for v in values]; s = sum(e); return [x / s for x in e]
    rows = 0.0
    for i in range(n_t):
        target, student = softmax([teacher[i][j] / tau for j in range(n_a)]), softmax([sim[i][j] / tau for j in range(n_a)])
        rows += -sum(p * math.log(q) for p, q in zip(target, student))
    cols = 0.0
    for j in range(n_a):
        target, student = softmax([teacher[i][j] / tau for i in range(n_t)]), softmax([sim[i][j] / tau for i in range(n_t)])
        cols += -sum(p * math.log(q) for p, q in zip(target, student))
    return 0.5 * (rows / n_t + cols / n_a)


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('repeats', [False, True])
def test_ntxent_equals_naive(seed, repeats):
    sim, pos, ids = random_batch(seed, repeats=repeats)
    if repeats: assert pos.sum() > len(ids)  # 7 items from 4 clips: some rows have several positives
    got = NTXentLoss(tau=0.05)(sim, pos).item()
    assert got == pytest.approx(ntxent_naive(sim, pos, 0.05), abs=1e-6)


def test_ntxent_multi_positive_case_occurs_and_matches():
    ids = ['a', 'b', 'a', 'c']
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.2, 0.7, 0.1, 0.3], [0.7, 0.0, 0.9, 0.2], [0.1, 0.3, 0.2, 0.6]], dtype=torch.float64)
    pos = positive_mask(ids, ids)
    assert pos.sum() == 6
    assert NTXentLoss(0.1)(sim, pos).item() == pytest.approx(ntxent_naive(sim, pos, 0.1), abs=1e-9)


@pytest.mark.parametrize('seed', range(5))
def test_sigmoid_equals_naive_and_trains_t_and_b(seed):
    sim, pos, _ = random_batch(seed, repeats=True)
    loss = SigmoidLoss(t_init=1.0, b_init=-10.0).double()
    value = loss(sim, pos)
    assert value.item() == pytest.approx(sigmoid_naive(sim, pos, 1.0, -10.0), abs=1e-6)
    value.backward()
    eps = 1e-6  # central finite differences of the naive formula
    dt = (sigmoid_naive(sim, pos, 1.0 + eps, -10.0) - sigmoid_naive(sim, pos, 1.0 - eps, -10.0)) / (2 * eps)
    db = (sigmoid_naive(sim, pos, 1.0, -10.0 + eps) - sigmoid_naive(sim, pos, 1.0, -10.0 - eps)) / (2 * eps)
    assert loss.t.grad.item() == pytest.approx(dt, rel=1e-5) and loss.b.grad.item() == pytest.approx(db, rel=1e-5)
    assert loss.t.grad.abs() > 0 and loss.b.grad.abs() > 0


def test_sigmoid_thesis_variant_divides_by_tau():
    sim, pos, _ = random_batch(0)
    loss = SigmoidLoss(t_init=0.0, b_init=0.0, tau=0.5).double()
    assert loss(sim, pos).item() == pytest.approx(sigmoid_naive(sim / 0.5, pos, 0.0, 0.0), abs=1e-6)


@pytest.mark.parametrize('seed', range(5))
def test_distillation_equals_naive(seed):
    sim, _, _ = random_batch(seed)
    teacher = torch.rand(sim.shape, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    got = DistillationLoss(tau=0.05)(sim, teacher).item()
    assert got == pytest.approx(distill_naive(sim, teacher, 0.05), abs=1e-6)


def test_distillation_gradient_reaches_the_student_only():
    sim = torch.randn(4, 4, requires_grad=True); teacher = torch.randn(4, 4, requires_grad=True)
    DistillationLoss()(sim, teacher).backward()
    assert sim.grad.abs().sum() > 0 and teacher.grad is None


def test_teacher_similarity_averages_cosines_of_teachers():
    g = torch.Generator().manual_seed(0)
    texts = [torch.randn(5, 8, generator=g), torch.randn(5, 3, generator=g)]
    audios = [torch.randn(4, 8, generator=g), torch.randn(4, 3, generator=g)]
    got = teacher_similarity(texts, audios)
    for i in range(5):
        for j in range(4):
            want = sum(torch.nn.functional.cosine_similarity(t[i], a[j], dim=0) for t, a in zip(texts, audios)) / 2
            assert got[i, j].item() == pytest.approx(want.item(), abs=1e-6)
