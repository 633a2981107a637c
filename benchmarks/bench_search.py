"""Searching an index: exact chunked products (torch) against FAISS, measured in one run on this machine.

Stand-in index: N window vectors (default 100k, D = 1024, the papers' embedding size) and Q queries (default 10k),
random unit vectors with structure: drawn around 1000 random unit centres with noise of norm 0.8 (a sound collection
has groups of similar sounds), queries around the same centres. Every method returns the top 10 windows of every query; FAISS's results are
compared with the exact ones (recall@10: the share of the exact top 10 it also returns).

1. exact: `laretrieval.search.exact_searcher` (metrics.chunked_search: blocks of 1024 queries x 8192 windows);
2. FAISS IndexFlatIP: the same exact inner products (what `search_index` uses above `exact_below`);
3. FAISS IndexIVFFlat (nlist = 4 sqrt(N) lists, nprobe = 16): approximate, for comparison only; its training
   (k-means over the vectors) counts as its build time.

Each method runs in a fresh subprocess that loads the same vectors from disk: 'index MB' is the resident memory its
built index adds (a FAISS index copies the vectors; the exact search reads them in place), 'peak MB' the peak
resident memory above the loaded vectors during build and search (getrusage ru_maxrss). Also measured: one query at
a time (the CLI's case: the exact path through `chunked_search` checks every vector for NaN on each call, which is
what dominates one query there), and `top_files` (one hit per file, ~5 windows per file) with both backends, which
must return the same files.

Run: `python benchmarks/bench_search.py` (about 2.5 minutes on 2 CPU cores); quick check:
`python benchmarks/bench_search.py --n 20000 --queries 1000 --dim 512`.

Measured on the project's 2 shared CPU cores (2026-12-01), defaults: exact 36 s for the 10k queries, FAISS flat 21 s
(1.7x faster; one query 42 ms against 565 ms), both recall 1; the flat index holds a 391 MB copy of the vectors. IVF:
2 s (18x faster than exact) after 22 s of training, recall@10 1.000 on these clustered vectors, but 0.059 with
`--noise 8` (no structure). `top_files` returned the same files with both backends for every query.
"""
import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 10


def unit_vectors(rng, centres, n, noise=0.8, block=20000):
    "n unit vectors around unit centres (noise of norm about `noise`), built in float32 blocks (no float64 copy of the whole matrix)."
    dim = centres.shape[1]
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, block):
        m = min(block, n - i)
        x = centres[rng.integers(0, len(centres), m)] + (noise / math.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_data(folder, n, q, dim, noise, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    np.save(folder / 'vectors.npy', unit_vectors(rng, centres, n, noise))
    np.save(folder / 'queries.npy', unit_vectors(rng, centres, q, noise))


def peak_mb():
    "Peak resident memory of this process so far (MB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb():
    "Resident memory of this process now (MB)."
    return int(Path('/proc/self/statm').read_text().split()[1]) * resource.getpagesize() / 2**20


def worker(method, folder):
    "Run one method on the stored data; print a JSON line: build/search seconds, memory, and store its top-10 rows."
    import faiss
    from laretrieval.search import exact_searcher
    vectors, queries = np.load(folder / 'vectors.npy'), np.load(folder / 'queries.npy')
    base = resident_mb()
    start = time.perf_counter()
    if method == 'exact': search = exact_searcher(vectors)
    else:
        if method == 'faiss-flat':
            index = faiss.IndexFlatIP(vectors.shape[1]); index.add(vectors)
        else:
            nlist = int(4 * math.sqrt(len(vectors)))
            quantizer = faiss.IndexFlatIP(vectors.shape[1])
            index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors); index.add(vectors); index.nprobe = 16
        search = index.search
    build, held = time.perf_counter() - start, resident_mb() - base
    start = time.perf_counter()
    scores, rows = search(queries, K)
    batch = time.perf_counter() - start
    single = []
    for i in range(50):  # one query at a time
        start = time.perf_counter(); search(queries[i:i + 1], K); single.append(time.perf_counter() - start)
    np.save(folder / f'rows-{method}.npy', np.asarray(rows))
    print(json.dumps(dict(method=method, build=build, search=batch, single_ms=1e3 * float(np.median(single)), index_mb=held, peak_mb=peak_mb() - base)))


def files_worker(folder, n_queries=1000, per_file=5):
    "top_files (one hit per file) with both backends on the first queries; they must return the same files."
    from laretrieval.search import top_files
    vectors, queries = np.load(folder / 'vectors.npy'), np.load(folder / 'queries.npy')[:n_queries]
    rng = np.random.default_rng(1)
    file_of_row = np.unique(np.sort(rng.integers(0, len(vectors) // per_file, len(vectors))), return_inverse=True)[1]
    out = {}
    for name, exact_below in (('exact', len(vectors) + 1), ('faiss-flat', 0)):
        start = time.perf_counter(); hits = top_files(vectors, file_of_row, queries, K, exact_below); out[name] = time.perf_counter() - start
        out[f'{name}_files'] = [[f for f, _, _ in q] for q in hits]
    same = np.mean([a == b for a, b in zip(out['exact_files'], out['faiss-flat_files'])])
    print(json.dumps(dict(queries=len(queries), files=int(file_of_row.max()) + 1, exact=out['exact'], faiss=out['faiss-flat'], same=float(same))))


def run(args, folder):
    cmd = [sys.executable, __file__, '--data', str(folder)] + args
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode: sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=100_000, help='window vectors in the index')
    parser.add_argument('--queries', type=int, default=10_000, help='queries')
    parser.add_argument('--dim', type=int, default=1024, help='embedding size')
    parser.add_argument('--noise', type=float, default=0.8, help='norm of the noise around the unit centres (8: practically no structure)')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--data', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == 'files': return files_worker(Path(args.data))
    if args.worker: return worker(args.worker, Path(args.data))
    import faiss, torch
    print(f"{args.n} window vectors x {args.queries} queries, D = {args.dim}, noise {args.noise}, top {K}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter(); make_data(folder, args.n, args.queries, args.dim, args.noise)
        print(f"data: {args.n * args.dim * 4 / 2**20:.0f} MB of vectors, made in {time.perf_counter() - start:.1f} s\n")
        results = [run(['--worker', m], folder) for m in ('exact', 'faiss-flat', 'faiss-ivf')]
        exact_rows = np.load(folder / 'rows-exact.npy')
        print(f"{'method':<12} {'build s':>8} {'search s':>9} {'queries/s':>10} {'1 query ms':>11} {'index MB':>9} {'peak MB':>8} {'recall@10':>10}")
        for r in results:
            rows = np.load(folder / f"rows-{r['method']}.npy")
            r['recall'] = np.mean([len(set(a) & set(b)) / K for a, b in zip(exact_rows, rows)])
            print(f"{r['method']:<12} {r['build']:8.2f} {r['search']:9.2f} {args.queries / r['search']:10.0f} {r['single_ms']:11.2f} "
                  f"{r['index_mb']:9.0f} {r['peak_mb']:8.0f} {r['recall']:10.4f}")
        exact, flat, ivf = results
        print(f"\nratios: exact / FAISS flat search time {exact['search'] / flat['search']:.2f}x (one query: "
              f"{exact['single_ms'] / flat['single_ms']:.2f}x); exact / FAISS IVF {exact['search'] / ivf['search']:.1f}x "
              f"at recall@10 {ivf['recall']:.3f}, its build {ivf['build'] / max(flat['build'], 1e-9):.0f}x the flat index's")
        files = run(['--worker', 'files'], folder)
        print(f"top_files, one hit per file ({files['files']} files, {files['queries']} queries): exact {files['exact']:.2f} s, "
              f"FAISS flat {files['faiss']:.2f} s, same files for {100 * files['same']:.1f}% of the queries")


if __name__ == '__main__':
    main()
