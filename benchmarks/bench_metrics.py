"""Speed and memory of the retrieval metrics, measured in one run on this machine.

1. Clotho evaluation shape, 5225 captions x 1045 clips (5 captions per clip), random scores (fixed seed): the time
   of our metrics against what bounds them, medians of interleaved repeats (each repeat runs every contender once,
   so load from other work on the machine hits them alike):
   - ours: `retrieval_metrics` text->audio, audio->text on the transposed view (as `evaluate_relevance` passes it),
     and both directions with means and chance levels (`evaluate_relevance`);
   - salsa's evaluation primitive, `torch.topk(k=10)` over the matrix;
   - the bound a counting method can reach: one compare-and-count pass over the matrix (numpy, the fastest
     we have here; torch's `(scores >= rel[:, None]).sum(1)` beside it), text->audio needs one, audio->text five
     (one per relevant caption);
   - for context, the matrix product that makes the scores: torch.mm and numpy (OpenBLAS) of 5225x1024 @ 1024x1045.
   The ratios printed: ours / topk, both / each direction and / their sum, ours / the count bound. Both directions
   cannot cost under about 2x text->audio with counting: audio->text compares every score with each clip's 5 caption
   scores (5 passes) where text->audio compares it with one; `evaluate_relevance` does the 6 in one read of the matrix.
2. Same shape, with a system well above chance: the vectorised metrics against the per-query Python loop
   (`loop_metrics`), both directions.
3. A multi-positive relevance file of the DCASE 2025 shape, written and read back in the `query,audio_filenames`
   layout: 3000 queries x 1045 clips, 1 + Poisson(1.8) relevant clips per query (mean 2.8, the relevant files per
   caption the DCASE 2025 results page reports for the development-testing set; the number of annotated queries
   is not in our data, so 3000 stands for "a few thousand").
4. `chunked_search` on 10k queries x 100k candidates (D = 1024, the papers' embedding size), top 16 plus the exact
   rank of each query's relevant candidate: peak memory as the process's peak resident set size (getrusage
   ru_maxrss, in a fresh subprocess so nothing else inflates it), and GFLOP/s next to torch.mm's.

The loop reference is timed on a subset of the queries and scaled to all of them (it is linear in the queries);
the subset's results are checked against the vectorised ones.

Run: `python benchmarks/bench_metrics.py [--threads N] [--only-speed]` (about 4 minutes on 2 CPU cores; N sets
torch's and OpenBLAS's threads, default: torch's default).
"""
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from laretrieval.losses import positive_mask
from laretrieval.metrics import chunked_search, evaluate_relevance, loop_metrics, relevant_index, retrieval_metrics
from laretrieval.submission import read_relevance_file, relevance_mask

MAP_KS, RECALL_KS = (10, 16), (1, 5, 10)
SPEED_REPEATS = 31


def best_of(fn, repeats=3):
    "Fastest of a few runs (seconds) and the last result."
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); out = fn(); times.append(time.perf_counter() - start)
    return min(times), out


def compare(name, scores, relevant, subset, normalize='R'):
    "Time the vectorised metrics on all queries and the loop on `subset` queries, scaled; check they agree."
    t_fast, fast = best_of(lambda: retrieval_metrics(scores, relevant, MAP_KS, RECALL_KS, normalize))
    start = time.perf_counter()
    ref = loop_metrics(scores[:subset], relevant[:subset], MAP_KS, RECALL_KS, normalize)
    t_loop = (time.perf_counter() - start) * scores.shape[0] / subset
    err = max(np.abs(fast[k][:subset] - ref[k]).max() for k in ref)
    print(f"{name:<44} {tuple(scores.shape)!s:>13}  vectorised {t_fast * 1e3:8.1f} ms   loop {t_loop:7.2f} s "
          f"(timed on {subset} queries, scaled)   loop/vectorised {t_loop / t_fast:7.0f}x   max |diff| {err:.1e}")


def timed_interleaved(contenders, repeats=SPEED_REPEATS):
    "Seconds of each run of each contender; every repeat runs all of them once, in turn."
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter(); fn(); times[name].append(time.perf_counter() - start)
    return times


def clotho_speed():
    g = torch.Generator().manual_seed(0)
    relevant = positive_mask([i // 5 for i in range(5225)], list(range(1045)))
    scores = torch.randn(5225, 1045, generator=g)  # random: the relevant ranks spread over the whole list
    s = scores.numpy()
    rel_t2a = scores[relevant].view(-1, 1)  # row order: caption i's clip
    is_ge = np.empty(s.shape, bool)
    text, audio_t = torch.randn(5225, 1024, generator=g), torch.randn(1024, 1045, generator=g)
    text_np, audio_np = text.numpy(), audio_t.numpy()
    t2a = lambda: retrieval_metrics(scores, relevant, MAP_KS, RECALL_KS)
    a2t = lambda: retrieval_metrics(scores.T, relevant.T, MAP_KS, RECALL_KS)
    contenders = {
        'ours text->audio (retrieval_metrics)': t2a,
        'ours audio->text (on the transposed view)': a2t,
        'ours both directions (evaluate_relevance)': lambda: evaluate_relevance(scores, relevant, MAP_KS, RECALL_KS),
        "salsa's torch.topk(10) over the matrix": lambda: scores.topk(10, dim=1),
        'one count pass, numpy (the bound)': lambda: np.greater_equal(s, rel_t2a.numpy(), out=is_ge).view(np.uint8).sum(1, dtype=np.uint16),
        'one count pass, torch (scores >= rel).sum(1)': lambda: (scores >= rel_t2a).sum(1),
        'torch.mm 5225x1024 @ 1024x1045': lambda: text @ audio_t,
        'numpy (OpenBLAS) GEMM, same shapes': lambda: text_np @ audio_np,
    }
    # the fast paths agree with the sort-based definition and the loop before anything is timed
    contiguous = retrieval_metrics(scores.T.contiguous(), relevant.T.contiguous(), MAP_KS, RECALL_KS)
    assert all(np.array_equal(a2t()[k], contiguous[k]) for k in contiguous)
    ref = loop_metrics(scores[:300], relevant[:300], MAP_KS, RECALL_KS)
    assert all(np.abs(t2a()[k][:300] - ref[k]).max() < 1e-12 for k in ref)
    times = timed_interleaved(contenders)
    m = {name: float(np.median(t)) for name, t in times.items()}
    names = list(contenders)
    print(f'1. Clotho evaluation shape {tuple(scores.shape)}, random scores, {SPEED_REPEATS} interleaved repeats: median (fastest)')
    for name in names: print(f'   {name:<46} {m[name] * 1e3:8.2f} ms  ({min(times[name]) * 1e3:7.2f} ms)')
    print('   ratios of the medians:')
    ours_t2a, ours_a2t, both, topk, bound = (m[n] for n in names[:5])
    print(f'   ours text->audio / topk                        {ours_t2a / topk:8.2f}')
    print(f'   ours both directions / ours text->audio         {both / ours_t2a:8.2f}')
    print(f'   ours both directions / ours audio->text         {both / ours_a2t:8.2f}')
    print(f'   ours both / (ours text->audio + audio->text)    {both / (ours_t2a + ours_a2t):8.2f}')
    print(f'   ours text->audio / one count pass               {ours_t2a / bound:8.2f}')
    print(f'   ours audio->text / five count passes            {ours_a2t / (5 * bound):8.2f}')
    print(f'   ours both / six count passes                    {both / (6 * bound):8.2f}')
    print(f'   torch.mm / numpy GEMM                           {m[names[6]] / m[names[7]]:8.2f}')


def clotho_shape():
    g = torch.Generator().manual_seed(0)
    text_ids = [i // 5 for i in range(5225)]; audio_ids = list(range(1045))
    relevant = positive_mask(text_ids, audio_ids)
    scores = torch.randn(5225, 1045, generator=g) + 2.5 * relevant  # a system well above chance
    print('\n2. Clotho evaluation shape, a system above chance: vectorised against the loop (mAP@10, mAP@16, R@1/5/10, ranks)')
    compare('text->audio (1 relevant clip per caption)', scores, relevant, 500)
    compare('audio->text (5 relevant captions per clip)', scores.T.contiguous(), relevant.T.contiguous(), 100)


def dcase2025_shape():
    rng = np.random.default_rng(1)
    clips = [f'clip_{i:04d}.wav' for i in range(1045)]
    n_relevant = 1 + rng.poisson(1.8, 3000)
    rows = [(f'query {q}', str([str(f) for f in rng.choice(clips, n, replace=False)])) for q, n in enumerate(n_relevant)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'relevance.csv'
        pd.DataFrame(rows, columns=['query', 'audio_filenames']).to_csv(path, index=False)
        start = time.perf_counter(); truth = read_relevance_file(path, clips); t_read = time.perf_counter() - start
    queries = list(truth.relevant)
    relevant = relevance_mask(truth, queries, clips)
    scores = torch.randn(3000, 1045, generator=torch.Generator().manual_seed(2)) + 2.0 * relevant
    print(f'\n3. DCASE 2025 shape: {len(queries)} queries x {len(clips)} clips, relevant per query: mean {n_relevant.mean():.2f}, '
          f'max {n_relevant.max()} (relevance file read in {t_read * 1e3:.0f} ms)')
    compare('text->audio, AP divided by R', scores, relevant, 500)
    compare("text->audio, AP divided by min(k, R)", scores, relevant, 500, normalize='min')


def chunked_child(n_queries=10_000, n_candidates=100_000, dim=1024, k=16):
    "Runs in a fresh process: peak RSS of the chunked search and its GFLOP/s, and torch.mm's GFLOP/s."
    kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB, the high-water mark
    g = torch.Generator().manual_seed(3)
    candidates = torch.empty(n_candidates, dim).normal_(generator=g)  # in place: no temporaries
    candidates.div_(candidates.norm(dim=1, keepdim=True))
    queries = torch.empty(n_queries, dim).normal_(generator=g)
    queries.div_(queries.norm(dim=1, keepdim=True))
    query_ids = torch.randint(0, n_candidates, (n_queries,), generator=g).tolist()
    relevant = relevant_index(query_ids, list(range(n_candidates)))
    before = kib()
    start = time.perf_counter()
    found = chunked_search(queries, candidates, k=k, relevant=relevant)
    seconds = time.perf_counter() - start
    peak = kib()
    a, b = torch.randn(1024, dim), torch.randn(8192, dim)
    t_block, _ = best_of(lambda: a @ b.T, 5)
    x = torch.randn(4096, 4096)
    t_square, _ = best_of(lambda: x @ x, 3)
    print(json.dumps(dict(
        seconds=seconds, gflops=2 * n_queries * n_candidates * dim / seconds / 1e9,
        mm_block_gflops=2 * 1024 * 8192 * dim / t_block / 1e9, mm_square_gflops=2 * 4096 ** 3 / t_square / 1e9,
        rss_before_mib=before / 1024, rss_peak_mib=peak / 1024,
        inputs_mib=(candidates.numel() + queries.numel()) * 4 / 2 ** 20, full_matrix_mib=n_queries * n_candidates * 4 / 2 ** 20,
        threads=torch.get_num_threads(), mean_rank=float(found.ranks.nanmean()))))


def cpu_name():
    "The CPU's model name (Linux), else an empty string."
    try: return re.search(r'model name\s*:\s*(.*)', Path('/proc/cpuinfo').read_text()).group(1)
    except (OSError, AttributeError): return ''


def chunked_shape():
    out = subprocess.run([sys.executable, __file__, '--chunked-child', str(torch.get_num_threads())], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print('\n4. chunked_search: 10,000 queries x 100,000 candidates, D = 1024, top 16 + exact rank of the relevant candidate '
          '(query chunk 1024, candidate chunk 8192)')
    print(f"   time {r['seconds']:.1f} s; {r['gflops']:.0f} GFLOP/s counting only the 2*Q*N*D of the scores "
          f"(torch.mm on this machine, {r['threads']} threads: {r['mm_block_gflops']:.0f} GFLOP/s on one 1024x1024 @ 1024x8192 block, "
          f"{r['mm_square_gflops']:.0f} GFLOP/s on 4096^3)")
    print(f"   peak RSS (getrusage ru_maxrss, whole process): {r['rss_peak_mib']:.0f} MiB; before the search {r['rss_before_mib']:.0f} MiB "
          f"(Python + torch + {r['inputs_mib']:.0f} MiB of embeddings), so the search added {r['rss_peak_mib'] - r['rss_before_mib']:.0f} MiB; "
          f"the full score matrix alone would be {r['full_matrix_mib']:.0f} MiB")
    print(f"   mean rank of the relevant candidate (random embeddings, so about N/2): {r['mean_rank']:.0f}")


if __name__ == '__main__':
    if sys.argv[1:2] == ['--chunked-child']:
        torch.set_num_threads(int(sys.argv[2]))
        with threadpool_limits(int(sys.argv[2]), user_api='blas'):
            chunked_child()
    else:
        import argparse, os
        parser = argparse.ArgumentParser()
        parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help="torch's and OpenBLAS's threads")
        parser.add_argument('--only-speed', action='store_true', help='section 1 only')
        args = parser.parse_args()
        torch.set_num_threads(args.threads)
        with threadpool_limits(args.threads, user_api='blas'):
            print(f'torch {torch.__version__}, numpy {np.__version__}, {args.threads} threads (torch and OpenBLAS), '
                  f'{cpu_name()}, load average {os.getloadavg()[0]:.1f} '
                  f'on {os.cpu_count()} cores (other work on the machine slows every timing)\n')
            clotho_speed()
            if not args.only_speed:
                clotho_shape()
                dcase2025_shape()
                chunked_shape()
