"Ensembles and the distillation teacher: what the notebook cannot show in a few lines (import cost, a failed save, brute force)."
import subprocess, sys

import pytest
import torch

from laretrieval import ensemble
from laretrieval.ensemble import choose_weights, combine_similarities, ensemble_teacher, simplex_grid, zscore
from laretrieval.teachers import MissingTeacherKey, TeacherTargets
from laretrieval.metrics import evaluate_retrieval


def test_import_is_light():
    "laretrieval.train imports this module, so it must not import train back, nor the encoders (transformers) at the top."
    code = ("import sys, laretrieval.ensemble; "
            "print(sorted(m for m in ('laretrieval.train', 'laretrieval.model', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == '[]', out


def _members(n_models, n_clips=30, per_clip=3, seed=0):
    "Random members of one retrieval problem: the true correspondence plus noise, on different scales."
    g = torch.Generator().manual_seed(seed)
    audio = [f'c{j}' for j in range(n_clips)]
    text = [a for a in audio for _ in range(per_clip)]
    truth = torch.tensor([[t == a for a in audio] for t in text], dtype=torch.float32)
    return [(k + 1) * (truth + (0.5 + k) * torch.randn(truth.shape, generator=g)) for k in range(n_models)], text, audio


def test_choose_weights_is_the_brute_force_argmax():
    "The t2a-only shortcut and the tie rule agree with evaluate_retrieval at every grid point."
    sims, text, audio = _members(3)
    weights, value = choose_weights(sims, text, audio, metric='mAP@10', step=0.25)
    scored = [(evaluate_retrieval(combine_similarities(sims, weights=w), text, audio)['t2a']['mAP@10'], w)
              for w in simplex_grid(3, 0.25)]
    best = max(v for v, _ in scored)
    assert value == pytest.approx(best, abs=1e-12)
    tied = [w for v, w in scored if abs(v - best) < 1e-12]
    assert tuple(weights) == min(tied, key=lambda w: sum((x - 1 / 3) ** 2 for x in w))


def test_choose_weights_recall_and_raw():
    sims, text, audio = _members(2, seed=1)
    weights, value = choose_weights(sims, text, audio, normalize='raw', metric='R@5', step=0.5)
    assert value == pytest.approx(evaluate_retrieval(combine_similarities(sims, 'raw', weights), text, audio)['t2a']['R@5'], abs=1e-12)
    with pytest.raises(ValueError, match="'mAP@k' or 'R@k'"): choose_weights(sims, text, audio, metric='median_rank')
    with pytest.raises(ValueError, match="'zscore' or 'raw'"): choose_weights(sims, text, audio, normalize='rank')


def test_zscore_rejects_bad_matrices():
    with pytest.raises(ValueError, match='NaN'): zscore(torch.tensor([[0.1, float('nan')]]))
    with pytest.raises(ValueError, match='2-D'): zscore(torch.ones(3))


def test_ensemble_teacher_of_one_member_is_that_member_for_any_weights():
    sims, text, audio = _members(3, seed=2)
    texts = [f'caption {i}' for i in range(len(text))]
    one = ensemble_teacher(sims, texts, audio, weights=[0, 2, 0])
    torch.testing.assert_close(one.matrix, sims[1], atol=1e-5, rtol=0)
    assert one.n_teachers == 3 and one.kind == 'matrix'


def test_missing_key_is_both_key_and_value_error():
    teacher = TeacherTargets.from_similarity(torch.rand(2, 2), ['a', 'b'], ['x', 'y'])
    for kind in (KeyError, ValueError, MissingTeacherKey):
        with pytest.raises(kind, match=r"1 of the batch's 2 caption texts .* \(first: 'c'\)"): teacher.targets(['a', 'c'], ['x'])


def test_from_similarity_tolerance():
    sim = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.1, 0.2 + 5e-7]])
    teacher = TeacherTargets.from_similarity(sim, ['dog', 'cat', 'dog'], ['x', 'y'])  # within 1e-6: the first row is kept
    assert teacher.caption_texts == ['dog', 'cat'] and teacher.targets(['dog'], ['y']).item() == pytest.approx(0.2)
    sim[2, 1] = 0.2 + 5e-6
    with pytest.raises(ValueError, match="first: 'dog'"): TeacherTargets.from_similarity(sim, ['dog', 'cat', 'dog'], ['x', 'y'])


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    "Atomic save: a crash while writing leaves the previous teacher intact and no temporary file behind."
    path = tmp_path / 'teacher.pt'
    old = TeacherTargets.from_similarity(torch.zeros(2, 3), ['a', 'b'], ['x', 'y', 'z'])
    old.save(path)
    new = TeacherTargets.from_similarity(torch.ones(2, 3), ['a', 'b'], ['x', 'y', 'z'])
    real_save = torch.save
    def crash(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError('disk full')
    monkeypatch.setattr(ensemble.torch, 'save', crash)
    with pytest.raises(OSError, match='disk full'): new.save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ['teacher.pt']
    assert TeacherTargets.load(path).matrix.sum().item() == 0


def test_load_errors_name_the_file(tmp_path):
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='garbage.pt is not a saved TeacherTargets'): TeacherTargets.load(garbage)
    future = tmp_path / 'future.pt'
    torch.save(dict(format=TeacherTargets.FORMAT, version=99), future)
    with pytest.raises(ValueError, match='future.pt is TeacherTargets format version 99'): TeacherTargets.load(future)
    with pytest.raises(FileNotFoundError, match='nothing.pt'): TeacherTargets.load(tmp_path / 'nothing.pt')


def test_embeddings_and_matrix_forms_agree():
    "The same teachers as embeddings or as their mean cosine matrix give the same targets for any batch."
    g = torch.Generator().manual_seed(3)
    texts, clips = [f't{i}' for i in range(20)], [f'c{j}' for j in range(12)]
    text_emb = [torch.randn(20, 8, generator=g), torch.randn(20, 5, generator=g)]
    audio_emb = [torch.randn(12, 8, generator=g), torch.randn(12, 5, generator=g)]
    by_embeddings = TeacherTargets.from_embeddings(text_emb, audio_emb, texts, clips)
    full = by_embeddings.targets(texts, clips)
    by_matrix = TeacherTargets.from_similarity(full, texts, clips, n_teachers=2)
    rows, cols = torch.randint(20, (16,), generator=g).tolist(), torch.randint(12, (16,), generator=g).tolist()
    batch = [texts[i] for i in rows], [clips[j] for j in cols]
    torch.testing.assert_close(by_matrix.targets(*batch), by_embeddings.targets(*batch), atol=1e-6, rtol=0)
    torch.testing.assert_close(by_matrix.targets(*batch), full[rows][:, cols], atol=0, rtol=0)
