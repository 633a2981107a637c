"""Metrics against a per-query loop reference (to 1e-9) and the counted ranks against the sorted order (exactly, in
every memory layout), the chunked search against the full matrix, the significance tools on cases with known
answers, and submission files on the real Clotho evaluation captions."""
import numpy as np
import pandas as pd
import pytest
import torch

from laretrieval.losses import positive_mask
from laretrieval.metrics import (chunked_search, evaluate_embeddings, evaluate_relevance, evaluate_retrieval, index_from_mask,
                                 loop_metrics, metrics_from_ranks, ranked_relevance, relevant_index, relevant_ranks,
                                 retrieval_metrics, summarize)
from laretrieval.significance import bootstrap_ci, paired_test
from laretrieval.submission import (GroundTruth, evaluate_submission, export_submission, read_clotho_truth,
                                    read_relevance_file, read_score_table, relevance_mask, write_score_table)

KS = (1, 10, 16)


def clotho_like(n_clips, captions_per_clip, seed, ties):
    "Caption x clip scores with 5 captions per clip: continuous (no ties) or rounded to a few levels (many ties)."
    g = torch.Generator().manual_seed(seed)
    text_ids = [f'c{i // captions_per_clip}' for i in range(n_clips * captions_per_clip)]
    audio_ids = [f'c{i}' for i in range(n_clips)]
    scores = torch.rand(len(text_ids), n_clips, generator=g) + 0.3 * positive_mask(text_ids, audio_ids)
    if ties: scores = (scores * 4).round() / 4
    return scores, positive_mask(text_ids, audio_ids)


def multi_positive(n_queries, n_clips, seed, ties):
    "DCASE 2025 style relevance: each query has 1..6 relevant clips."
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_queries, n_clips, generator=g)
    if ties: scores = scores.round()
    relevant = torch.zeros(n_queries, n_clips, dtype=torch.bool)
    for q in range(n_queries):
        n = int(torch.randint(1, 7, (1,), generator=g))
        relevant[q, torch.randperm(n_clips, generator=g)[:n]] = True
    return scores, relevant


def many_positive(n_queries, n_clips, seed, ties):
    "More than 16 relevant items per query (the counts then go through a sort)."
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_queries, n_clips, generator=g)
    if ties: scores = scores.round()
    return scores, torch.rand(n_queries, n_clips, generator=g) < 0.4


CASES = {'single': lambda ties: clotho_like(40, 5, 0, ties), 'multi': lambda ties: multi_positive(150, 90, 1, ties),
         'many': lambda ties: many_positive(60, 70, 2, ties)}


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('direction', ['t2a', 'a2t', 'a2t view'])
@pytest.mark.parametrize('normalize', ['R', 'min'])
def test_vectorised_equals_loop_reference(case, ties, direction, normalize):
    scores, relevant = CASES[case](ties)
    if direction == 'a2t': scores, relevant = scores.T.contiguous(), relevant.T.contiguous()
    if direction == 'a2t view': scores, relevant = scores.T, relevant.T  # strided: counted down the columns, not copied
    ref = loop_metrics(scores, relevant, KS, KS, normalize)
    assert ties or len(np.unique(ref['rank'])) > 3  # a non-trivial case
    for fast in (retrieval_metrics(scores, relevant, KS, KS, normalize),
                 metrics_from_ranks(relevant_ranks(scores, relevant), KS, KS, normalize)):
        assert set(fast) == set(ref)
        for name in ref: np.testing.assert_allclose(fast[name], ref[name], rtol=0, atol=1e-9, err_msg=name)
    # the counted ranks are the positions of the relevant items in the sorted (pessimistic) order
    order = ranked_relevance(scores, relevant)
    ranks = relevant_ranks(scores, relevant)
    for q in range(len(scores)): assert ranks[q, :int(relevant[q].sum())].tolist() == (order[q].nonzero()[:, 0] + 1.0).tolist()


def sorted_positions(scores, relevant):
    "(queries, max R) 1-based positions of the relevant items in the pessimistic sort (the definition), NaN padding."
    order = ranked_relevance(scores, relevant)
    out = torch.full((len(scores), max(1, int(relevant.sum(1).max()))), float('nan'), dtype=torch.float64)
    for q in range(len(scores)):
        at = order[q].nonzero()[:, 0] + 1.0
        out[q, :len(at)] = at
    return out


def layouts(scores, relevant):
    "The same matrices in every memory layout the counts handle: contiguous, transposed views, strided rows."
    wide = torch.full((scores.shape[0], 2 * scores.shape[1]), 7.0); wide[:, ::2] = scores
    yield 'contiguous', scores, relevant
    yield 'column-major', scores.T.contiguous().T, relevant.T.contiguous().T
    yield 'strided rows', wide[:, ::2], relevant
    yield 'float64', scores.double(), relevant.to(torch.uint8)


@pytest.mark.parametrize('relevant_per_query', ['one', 'several', 'many'])
def test_counted_ranks_are_the_sorted_positions_exactly(relevant_per_query):
    "Ties everywhere, ties exactly at the relevant scores, +-inf: the counts equal the sort in every layout, bit for bit."
    g = torch.Generator().manual_seed(11)
    for trial in range(12):
        Q, N = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(2, 60, (1,), generator=g))
        scores = torch.randint(-2, 3, (Q, N), generator=g).float()  # five levels: most relevant scores are tied
        scores[torch.rand(Q, N, generator=g) < 0.08] = float('inf'); scores[torch.rand(Q, N, generator=g) < 0.08] = float('-inf')
        relevant = torch.zeros(Q, N, dtype=torch.bool)
        relevant[torch.arange(Q), torch.randint(0, N, (Q,), generator=g)] = True
        if relevant_per_query != 'one': relevant |= torch.rand(Q, N, generator=g) < (0.1 if relevant_per_query == 'several' else 0.6)
        want = sorted_positions(scores, relevant)
        want_metrics = metrics_from_ranks(want, KS, KS)
        for name, s, r in layouts(scores, relevant):
            got = relevant_ranks(s, r)
            assert torch.equal(got.nan_to_num(-1), want.nan_to_num(-1)), (trial, name)
            for key, value in metrics_from_ranks(got, KS, KS).items(): assert np.array_equal(value, want_metrics[key]), (trial, name, key)
            if name == 'contiguous':  # the other direction, on the transposed view where every clip is asked
                asked = r.any(0)
                if asked.all(): assert torch.equal(relevant_ranks(s.T, r.T).nan_to_num(-1), sorted_positions(s.T, r.T).nan_to_num(-1))


def test_tie_exactly_at_the_relevant_score_counts_against_it():
    "k non-relevant candidates tied with the single relevant one push it to rank (higher ones) + k + 1."
    scores = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    relevant = torch.tensor([[False, False, True, False, False], [True, False, False, False, False]])
    assert relevant_ranks(scores, relevant).tolist() == [[4.0], [5.0]]
    assert relevant_ranks(scores.T.contiguous().T, relevant).tolist() == [[4.0], [5.0]]


def test_evaluate_relevance_both_directions_equal_the_loop():
    "Clotho-like (5 captions per clip, ties) with one clip no caption points to: a2t asks only the other clips."
    scores, relevant = clotho_like(60, 5, 12, ties=True)
    relevant[:, 59] = False; relevant[295:, 0] = True  # clip 59 unasked; the last captions also point to clip 0
    res = evaluate_relevance(scores, relevant, KS, KS)
    for name, s, r in (('t2a', scores, relevant), ('a2t', scores.T[:59], relevant.T[:59])):
        want = summarize(loop_metrics(s, r, KS, KS))
        for key, value in want.items(): assert res[name][key] == pytest.approx(value, abs=1e-12), (name, key)
    assert (res['t2a']['queries'], res['a2t']['queries']) == (300, 59)
    assert evaluate_relevance(scores.T.contiguous().T, relevant, KS, KS) == res  # column-major: each direction on its own
    scores, relevant = clotho_like(12, 20, 13, ties=True)  # 20 captions per clip: audio->text counts by sorting
    res = evaluate_relevance(scores, relevant, KS, KS)
    for name, s, r in (('t2a', scores, relevant), ('a2t', scores.T, relevant.T)):
        want = summarize(loop_metrics(s, r, KS, KS))
        for key, value in want.items(): assert res[name][key] == pytest.approx(value, abs=1e-12), (name, key)
    with pytest.raises(ValueError, match='1 queries have no relevant clip'):
        bad = relevant.clone(); bad[3] = False; evaluate_relevance(scores, bad)
    with pytest.raises(ValueError, match='NaN'):
        nan = scores.clone(); nan[4, 2] = float('nan'); evaluate_relevance(nan, relevant)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_gpu_counts_equal_cpu():
    for case in CASES.values():
        scores, relevant = case(True)
        for s, r in ((scores, relevant), (scores.T, relevant.T)):
            assert torch.equal(relevant_ranks(s.cuda(), r.cuda()).nan_to_num(-1), relevant_ranks(s, r).nan_to_num(-1))


def test_hand_computed_multi_positive_and_ties():
    # candidates in score order: n, r, n(tie with r2), r2, r3 ...; relevant r (rank 2), r2 (rank 4: after the tied n), r3 (rank 5)
    scores = torch.tensor([[0.9, 0.8, 0.5, 0.5, 0.4, 0.1]])
    relevant = torch.tensor([[False, True, True, False, True, False]])
    m = retrieval_metrics(scores, relevant, (1, 4, 10), (1, 4))
    assert m['mAP@10'][0] == pytest.approx((1/2 + 2/4 + 3/5) / 3, abs=1e-15)
    assert m['mAP@4'][0] == pytest.approx((1/2 + 2/4) / 3, abs=1e-15)
    assert retrieval_metrics(scores, relevant, (4,), (), 'min')['mAP@4'][0] == pytest.approx((1/2 + 2/4) / 3, abs=1e-15)
    assert retrieval_metrics(scores, relevant, (2,), (), 'min')['mAP@2'][0] == pytest.approx((1/2) / 2, abs=1e-15)
    assert m['R@4'][0] == pytest.approx(2 / 3) and m['R@1'][0] == 0 and m['rank'][0] == 2
    assert relevant_ranks(scores, relevant).tolist() == [[2.0, 4.0, 5.0]]
    constant = retrieval_metrics(torch.zeros(1, 6), relevant, (10,), ())  # all tied: the worst ranks 4, 5, 6
    assert constant['mAP@10'][0] == pytest.approx((1/4 + 2/5 + 3/6) / 3) and constant['rank'][0] == 4


@pytest.mark.parametrize('ties', [False, True])
def test_chunked_search_equals_full_matrix(ties):
    "Both directions, single- and multi-positive, ties crossing block edges; integer embeddings make every score exact."
    g = torch.Generator().manual_seed(3)
    D = 8
    audio = torch.randint(-3, 4, (97, D), generator=g).float() if ties else torch.randn(97, D, generator=g)
    text = audio.repeat_interleave(5, 0) + (torch.randint(-1, 2, (485, D), generator=g).float() if ties else 0.7 * torch.randn(485, D, generator=g))
    text_ids = [i // 5 for i in range(485)]
    relevant = positive_mask(text_ids, list(range(97)))
    relevant[:, 7] |= torch.rand(485, generator=g) < 0.3  # multi-positive rows
    full = text @ audio.T
    for q, c, rel, s in ((text, audio, relevant, full), (audio, text, relevant.T, full.T)):
        found = chunked_search(q, c, k=16, relevant=index_from_mask(rel), query_chunk=37, candidate_chunk=23)
        stable = torch.sort(s, dim=1, descending=True, stable=True)
        assert torch.equal(found.top_indices, stable.indices[:, :16]) and torch.equal(found.top_scores, stable.values[:, :16])
        assert torch.equal(found.ranks.nan_to_num(0), relevant_ranks(s, rel).nan_to_num(0))
        ref = loop_metrics(s, rel, KS, KS)
        fast = metrics_from_ranks(found.ranks, KS, KS)
        for name in ref: np.testing.assert_allclose(fast[name], ref[name], rtol=0, atol=1e-9, err_msg=name)


def test_ties_at_the_top_k_edge_stay_pessimistic():
    "The relevant clip ties with 3 others at ranks 9-12: a top-10 list may hold it, its rank is still 12."
    scores = torch.tensor([[float(20 - j) for j in range(8)] + [5.0] * 4 + [1.0] * 8])
    q, c = torch.ones(1, 1), scores.T  # dot products reproduce the scores
    for relevant_column in (8, 9, 10, 11):
        found = chunked_search(q, c, k=10, relevant=torch.tensor([[relevant_column]]), candidate_chunk=3)
        assert found.ranks.item() == 12
        assert metrics_from_ranks(found.ranks, (10,), (10,))['mAP@10'][0] == 0
    assert found.top_indices[0, 8:].tolist() == [8, 9]  # the list itself breaks the tie by index


def test_evaluate_embeddings_equals_evaluate_retrieval():
    g = torch.Generator().manual_seed(4)
    audio = torch.nn.functional.normalize(torch.randn(60, 16, generator=g), dim=1)
    text = torch.nn.functional.normalize(audio.repeat_interleave(5, 0) + torch.randn(300, 16, generator=g), dim=1)
    t_ids, a_ids = [f'x{i // 5}' for i in range(300)], [f'x{i}' for i in range(60)]
    a = evaluate_retrieval(text @ audio.T, t_ids, a_ids, (10, 16), (1, 5, 10))
    b = evaluate_embeddings(text, audio, t_ids, a_ids, (10, 16), (1, 5, 10), query_chunk=64, candidate_chunk=17)
    for d in ('t2a', 'a2t'):
        assert a[d].keys() == b[d].keys()
        for name in a[d]: assert b[d][name] == pytest.approx(a[d][name], abs=1e-12), (d, name)


def test_chunked_search_rejects_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match='dimensions'): chunked_search(x, torch.randn(5, 2))
    with pytest.raises(ValueError, match='k=9'): chunked_search(x, torch.randn(5, 3), k=9)
    with pytest.raises(ValueError, match='query 1 has no relevant'): chunked_search(x, x, k=2, relevant=torch.tensor([[0], [-1], [2], [3]]))
    bad = x.clone(); bad[2, 1] = float('nan')
    with pytest.raises(ValueError, match='first row: 2'): chunked_search(bad, x, k=2)
    with pytest.raises(ValueError, match="'q9'"): relevant_index(['c0', 'q9'], ['c0'])


# --- significance ---------------------------------------------------------------------------------------------

def test_bootstrap_interval_covers_the_true_mean_about_as_often_as_it_says():
    "300 data sets of 300 skewed per-query values with a known mean: the 90% interval covers it 0.85-0.95 of the time."
    rng = np.random.default_rng(0)
    a, b = 0.5, 1.5
    true_mean = a / (a + b)
    covered = [(lambda ci: ci['low'] <= true_mean <= ci['high'])(bootstrap_ci(rng.beta(a, b, 300), n_resamples=999, level=0.9, seed=i))
               for i in range(300)]
    assert 0.85 <= np.mean(covered) <= 0.95, np.mean(covered)


def test_grouped_bootstrap_covers_under_clustering():
    "Captions of a clip share its difficulty: grouping by clip keeps coverage; treating captions as independent loses it."
    rng = np.random.default_rng(1)
    groups = np.arange(100).repeat(5)
    true_mean = clipped_normal_mean(0.3, np.hypot(0.2, 0.05))  # each value is N(0.3, 0.2) + N(0, 0.05), clipped
    hits = {True: [], False: []}
    for i in range(200):
        values = np.clip(rng.normal(0.3, 0.2, 100).repeat(5) + rng.normal(0, 0.05, 500), 0, 1)
        for grouped in (True, False):
            ci = bootstrap_ci(values, groups if grouped else None, n_resamples=499, level=0.9, seed=i)
            hits[grouped].append(ci['low'] <= true_mean <= ci['high'])
    assert 0.84 <= np.mean(hits[True]) <= 0.95, np.mean(hits[True])
    assert np.mean(hits[False]) < 0.7, np.mean(hits[False])


def clipped_normal_mean(mu, sigma):
    "E[min(max(X, 0), 1)] for X ~ N(mu, sigma^2), in closed form."
    from scipy.stats import norm
    a, b = -mu / sigma, (1 - mu) / sigma
    return mu * (norm.cdf(b) - norm.cdf(a)) + sigma * (norm.pdf(a) - norm.pdf(b)) + norm.sf(b)


def test_paired_test_known_answers_and_calibration():
    rng = np.random.default_rng(2)
    ap = rng.beta(0.5, 1.5, 400)
    assert paired_test(ap, ap)['p_value'] == 1.0
    assert paired_test(ap + 0.05, ap, n_resamples=999)['p_value'] == pytest.approx(1 / 1000)
    worse = paired_test(ap - 0.05, ap, n_resamples=999)
    assert worse['p_value'] == 1.0 and worse['high'] < 0
    # under the null (A and B exchangeable per query) about 5% of p-values fall below 0.05
    p = [paired_test(*rng.permuted(np.stack([ap, np.clip(ap + rng.normal(0, 0.1, 400), 0, 1)]), axis=0), n_resamples=199, seed=i)['p_value']
         for i in range(200)]
    assert 0.02 <= np.mean(np.array(p) < 0.05) <= 0.09, np.mean(np.array(p) < 0.05)
    other = np.clip(ap + rng.normal(0, 0.1, 400), 0, 1)  # not identical inputs: with those every resample is 0
    assert paired_test(ap, other, seed=3) == paired_test(ap, other, seed=3)
    assert paired_test(ap, other, seed=3)['p_value'] != paired_test(ap, other, seed=4)['p_value']


def test_paired_test_on_two_real_rankings():
    "Two systems ranked on the same Clotho-shaped matrix: the sharper one wins with a tiny p, seeded and repeatable."
    scores, relevant = clotho_like(200, 5, 5, ties=False)
    noisy = scores + 0.25 * torch.randn(scores.shape, generator=torch.Generator().manual_seed(6))
    a, b = retrieval_metrics(scores, relevant, (10,))['mAP@10'], retrieval_metrics(noisy, relevant, (10,))['mAP@10']
    groups = [i // 5 for i in range(1000)]
    res = paired_test(a, b, groups=groups, seed=1)
    assert res['diff'] == pytest.approx(a.mean() - b.mean()) and res['p_value'] < 1e-3 and res['low'] > 0
    assert res == paired_test(a, b, groups=groups, seed=1)


# --- submission files -----------------------------------------------------------------------------------------

def test_clotho_submission_round_trip_equals_full_metrics(shared_data, tmp_path):
    "Real Clotho evaluation captions (5225 x 1045): export top 16, read back, evaluate = retrieval_metrics."
    truth = read_clotho_truth(shared_data / 'clotho_captions' / 'clotho_captions_evaluation.csv')
    queries = list(truth.relevant)
    assert len(queries) == 5225 and len(truth.candidates) == 1045
    g = torch.Generator().manual_seed(7)
    scores = torch.rand(len(queries), 1045, generator=g).argsort(1).float()  # distinct scores: the file order is the ranking
    relevant = relevance_mask(truth, queries, truth.candidates)
    scores += 400 * relevant * torch.rand(len(queries), 1, generator=g)  # a system better than chance
    scores = scores.argsort(1).argsort(1).float()
    export_submission(tmp_path / 'sub.csv', queries, truth.candidates, scores, k=16)
    assert pd.read_csv(tmp_path / 'sub.csv').columns.tolist() == ['caption', *[f'fname_{i}' for i in range(1, 17)]]
    got = evaluate_submission(tmp_path / 'sub.csv', truth, (10, 16), (1, 5, 10))
    want = retrieval_metrics(scores, relevant, (10, 16), (1, 5, 10))
    for name in ('mAP@10', 'mAP@16', 'R@1', 'R@5', 'R@10'): np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12)
    assert 0.05 < got['mAP@10'].mean() < 0.95


def test_dcase2025_relevance_file_round_trip(shared_data, tmp_path):
    "A multi-positive query,audio_filenames file over the real evaluation clips; the score table too."
    clotho = read_clotho_truth(shared_data / 'clotho_captions' / 'clotho_captions_evaluation.csv')
    rng = np.random.default_rng(8)
    queries = list(clotho.relevant)[:3000]
    rows = [(q, str(list(dict.fromkeys(clotho.relevant[q] + [str(f) for f in rng.choice(clotho.candidates, rng.integers(0, 4))]))))
            for q in queries]
    pd.DataFrame(rows, columns=['query', 'audio_filenames']).to_csv(tmp_path / 'relevance.csv', index=False)
    truth = read_relevance_file(tmp_path / 'relevance.csv', clotho.candidates)
    assert list(truth.relevant) == queries and max(map(len, truth.relevant.values())) > 1
    scores = torch.tensor(rng.permuted(np.tile(np.arange(1045.0), (3000, 1)), axis=1), dtype=torch.float32)
    export_submission(tmp_path / 'sub.csv', queries, clotho.candidates, scores, k=16)
    relevant = relevance_mask(truth, queries, clotho.candidates)
    for normalize in ('R', 'min'):
        got = evaluate_submission(tmp_path / 'sub.csv', truth, (16,), (1, 10), normalize)
        want = retrieval_metrics(scores, relevant, (16,), (1, 10), normalize)
        for name in ('mAP@16', 'R@1', 'R@10'): np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12)
    write_score_table(tmp_path / 'scores.csv', scores[:100], queries[:100], clotho.candidates)  # 100 rows keep it quick
    back, q_back, f_back = read_score_table(tmp_path / 'scores.csv')
    assert torch.equal(back, scores[:100]) and q_back == queries[:100] and f_back == clotho.candidates


def test_bad_submission_files_name_the_row(shared_data, tmp_path):
    truth = read_clotho_truth(shared_data / 'clotho_captions' / 'clotho_captions_evaluation.csv')
    queries = list(truth.relevant)
    scores = torch.rand(len(queries), 1045, generator=torch.Generator().manual_seed(9))
    good = export_submission(tmp_path / 'sub.csv', queries, truth.candidates, scores, k=10)

    def write(df):
        df.to_csv(tmp_path / 'bad.csv', index=False); return tmp_path / 'bad.csv'
    with pytest.raises(ValueError, match="missing column 'fname_4'"): evaluate_submission(write(good.drop(columns='fname_4')), truth)
    unknown = good.copy(); unknown.loc[99, 'fname_3'] = 'not_a_clip.wav'
    with pytest.raises(ValueError, match="row 100, fname_3: unknown file name 'not_a_clip.wav'"): evaluate_submission(write(unknown), truth)
    dup = good.copy(); dup.loc[41, 'caption'] = dup.loc[7, 'caption']
    with pytest.raises(ValueError, match=r'row 42: duplicate query .*\(first at row 8\)'): evaluate_submission(write(dup), truth)
    with pytest.raises(ValueError, match='1 ground-truth queries have no row'): evaluate_submission(write(good.drop(index=5)), truth)
    twice = good.copy(); twice.loc[10, 'fname_2'] = twice.loc[10, 'fname_1']
    with pytest.raises(ValueError, match='row 11: a file is listed twice'): evaluate_submission(write(twice), truth)
    (tmp_path / 'rel.csv').write_text("query,audio_filenames\nx,\"['Santa Motor.wav']\"\ny,\"['nope.wav']\"\n")
    with pytest.raises(ValueError, match="row 2: unknown file name 'nope.wav'"): read_relevance_file(tmp_path / 'rel.csv', truth.candidates)
    (tmp_path / 'twice.csv').write_text("query,audio_filenames\nx,\"['Santa Motor.wav']\"\nx,\"['Radio Garble.wav']\"\n")
    with pytest.raises(ValueError, match="row 2: query 'x' repeats .*row 1"): read_relevance_file(tmp_path / 'twice.csv', truth.candidates)


def test_duplicate_captions_in_clotho_development_become_multi_positive(shared_data):
    truth = read_clotho_truth(shared_data / 'clotho_captions' / 'clotho_captions_development.csv')
    df = pd.read_csv(shared_data / 'clotho_captions' / 'clotho_captions_development.csv')
    pairs = {(c, f) for f, *caps in df.itertuples(index=False) for c in caps}
    assert {(c, f) for c, files in truth.relevant.items() for f in files} == pairs
    assert sum(map(len, truth.relevant.values())) == len(pairs)  # no file twice for one caption
    assert len(truth.candidates) == 3839 and sum(len(f) > 1 for f in truth.relevant.values()) >= 1


def test_clotho_truth_refuses_an_empty_caption_and_a_shifted_row(tmp_path):
    "A blank caption cell would silently remove a query; a row with a cell beyond the header would shift columns."
    good = tmp_path / 'truth.csv'; good.write_text('file_name,caption_1,caption_2\na.wav,dog barks,rain\nb.wav,a car,wind\n')
    truth = read_clotho_truth(good)
    assert truth.relevant == {'dog barks': ['a.wav'], 'rain': ['a.wav'], 'a car': ['b.wav'], 'wind': ['b.wav']}
    assert truth.candidates == ['a.wav', 'b.wav']
    blank = tmp_path / 'blank.csv'; blank.write_text('file_name,caption_1,caption_2\na.wav,dog barks,\n')
    with pytest.raises(ValueError, match=r"row 1: empty caption_2 of 'a.wav'"): read_clotho_truth(blank)
    shifted = tmp_path / 'shifted.csv'; shifted.write_text('file_name,caption_1\na.wav,dog, barking\n')
    with pytest.raises(ValueError, match='line 2: 1 cell'): read_clotho_truth(shifted)
