"""Speed and memory of the retrieval metrics, measured in one run on this machine.

1. Clotho evaluation shape, 5225 captions x 1045 clips (5 captions per clip): the vectorised metrics
   (`retrieval_metrics`) against the per-query Python loop (`loop_metrics`), both directions.
2. A multi-positive relevance file of the DCASE 2025 shape, written and read back in the `query,audio_filenames`
   layout: 3000 queries x 1045 clips, 1 + Poisson(1.8) relevant clips per query (mean 2.8, the relevant files per
   caption the DCASE 2025 results page reports for the development-testing set; the number of annotated queries
   is not in our data, so 3000 stands for "a few thousand").
3. `chunked_search` on 10k queries x 100k candidates (D = 1024, the papers' embedding size), top 16 plus the exact
   rank of each query's relevant candidate: peak memory as the process's peak resident set size (getrusage
   ru_maxrss, in a fresh subprocess so nothing else inflates it), and GFLOP/s next to torch.mm's.

The loop reference is timed on a subset of the queries and scaled to all of them (it is linear in the queries);
the subset's results are checked against the vectorised ones.

Run: `python benchmarks/bench_metrics.py` (about 2 minutes on 2 CPU cores).
"""
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from laretrieval.losses import positive_mask
from laretrieval.metrics import chunked_search, loop_metrics, relevant_index, retrieval_metrics
from laretrieval.submission import read_relevance_file, relevance_mask

MAP_KS, RECALL_KS = (10, 16), (1, 5, 10)


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


def clotho_shape():
    g = torch.Generator().manual_seed(0)
    text_ids = [i // 5 for i in range(5225)]; audio_ids = list(range(1045))
    relevant = positive_mask(text_ids, audio_ids)
    scores = torch.randn(5225, 1045, generator=g) + 2.5 * relevant  # a system well above chance
    print('1. Clotho evaluation shape, single relevant clip per caption (mAP@10, mAP@16, R@1/5/10, ranks)')
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
    print(f'\n2. DCASE 2025 shape: {len(queries)} queries x {len(clips)} clips, relevant per query: mean {n_relevant.mean():.2f}, '
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


def chunked_shape():
    out = subprocess.run([sys.executable, __file__, '--chunked-child'], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print('\n3. chunked_search: 10,000 queries x 100,000 candidates, D = 1024, top 16 + exact rank of the relevant candidate '
          '(query chunk 1024, candidate chunk 8192)')
    print(f"   time {r['seconds']:.1f} s; {r['gflops']:.0f} GFLOP/s counting only the 2*Q*N*D of the scores "
          f"(torch.mm on this machine, {r['threads']} threads: {r['mm_block_gflops']:.0f} GFLOP/s on one 1024x1024 @ 1024x8192 block, "
          f"{r['mm_square_gflops']:.0f} GFLOP/s on 4096^3)")
    print(f"   peak RSS (getrusage ru_maxrss, whole process): {r['rss_peak_mib']:.0f} MiB; before the search {r['rss_before_mib']:.0f} MiB "
          f"(Python + torch + {r['inputs_mib']:.0f} MiB of embeddings), so the search added {r['rss_peak_mib'] - r['rss_before_mib']:.0f} MiB; "
          f"the full score matrix alone would be {r['full_matrix_mib']:.0f} MiB")
    print(f"   mean rank of the relevant candidate (random embeddings, so about N/2): {r['mean_rank']:.0f}")


if __name__ == '__main__':
    if sys.argv[1:] == ['--chunked-child']:
        chunked_child()
    else:
        import os
        print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} '
              f'on {os.cpu_count()} cores (other work on the machine slows every timing)\n')
        clotho_shape()
        dcase2025_shape()
        chunked_shape()
