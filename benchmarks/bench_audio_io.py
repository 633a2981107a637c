"""Audio input speed, measured in one run: decoding vs the decoded-audio cache, and `prepare_audio` on one core vs all.

Uses ESC-50 from ../shared/data/esc50 (16 kHz FLAC, 5 s) when present, else generates 5 s 16 kHz FLAC clips.

1. Per-clip loading as the training loader does it (single process): decode + resample to 32 kHz (PaSST's rate),
   pad to 30 s and cut into 3 segments of 10 s — without the cache, filling it (cold: entries renamed into place,
   no fsync), filling it the old way (an fsync per entry, for comparison), and reading it (warm: memory-mapped).
   `--clips` clips, each pass timed `--repeats` times; medians.
2. `prepare_audio` (decode, resample, fill a fresh cache, one sync at the end) over all clips: `workers=1` vs
   every core (a process pool); medians of `--repeats`. Next to it, the speed-up the same pool gets on pure CPU
   work, so a shared or throttled machine shows as such rather than as a slow pool.

    python benchmarks/bench_audio_io.py [--clips 400] [--rate 32000] [--repeats 3]
"""
import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import laretrieval.audio as audio_module
from laretrieval.audio import AudioCache, load_audio, segment
from laretrieval.corpora import audio_workers, decode_pool, prepare_audio, read_esc50

SHARED = Path(os.environ.get('LARETRIEVAL_SHARED', Path(__file__).resolve().parents[2] / 'shared'))


def corpus(scratch, n_generated=400):
    "The clips of ESC-50 (all of them) or of generated noise files, and a description."
    esc50 = SHARED / 'data' / 'esc50'
    if esc50.is_dir(): return read_esc50(esc50), 'ESC-50 (16 kHz FLAC, 5 s)'
    from laretrieval.datasets import Clip
    rng, clips = np.random.default_rng(0), []
    for i in range(n_generated):
        path = scratch / f'clip{i:04d}.flac'
        sf.write(path, (0.1 * rng.standard_normal(80000)).astype(np.float32), 16000)
        clips.append(Clip(path.name, ['noise'], 'train', path=path))
    return clips, 'generated noise (16 kHz FLAC, 5 s)'


def one_pass(paths, rate, cache):
    "Seconds loading (decode or cache read, resample) and segmenting (30 s pad, 3 x 10 s) over all paths."
    load = cut = 0.0
    for path in paths:
        start = time.perf_counter()
        wave = torch.from_numpy(load_audio(path, rate, cache))
        middle = time.perf_counter()
        segments, mask = segment(wave, segment_len=10 * rate, max_segments=3)  # touches every sample (a mapped entry is read here)
        load, cut = load + middle - start, cut + time.perf_counter() - middle
    return load + cut


def write_entry_with_fsync(entry, wave):
    "The cache write before this change: temporary file, fsync, rename."
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f'.{entry.name}.', suffix='.tmp')
    with os.fdopen(fd, 'wb') as f:
        np.save(f, wave.astype(np.float32, copy=False)); f.flush(); os.fsync(f.fileno())
    os.replace(tmp, entry)


def burn(n):
    "Pure CPU work: nothing to read, nothing to share."
    total = 0
    for i in range(n): total += i * i
    return total


def parallel_headroom(workers):
    "How much faster `workers` processes finish 4 x `workers` equal CPU-bound tasks than one: what the machine gives right now."
    seconds = {}
    for w in (1, workers):
        start = time.perf_counter()
        with decode_pool(w) as pool: list(pool.map(burn, [1_000_000] * (4 * workers)))
        seconds[w] = time.perf_counter() - start
    return seconds[1] / seconds[workers]


def median_seconds(run, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--clips', type=int, default=400, help='clips of the per-clip loading passes')
    parser.add_argument('--rate', type=int, default=32000)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        clips, source = corpus(scratch)
        paths, n = [c.path for c in clips[:args.clips]], min(args.clips, len(clips))
        one_pass(paths, args.rate, None)  # brings the files into the OS page cache
        caches = iter(range(10_000))
        def fresh(): return AudioCache(scratch / f'cache{next(caches)}')
        passes = {}
        passes['decode (no cache)'] = median_seconds(lambda: one_pass(paths, args.rate, None), args.repeats)
        passes['fill cache (rename)'] = median_seconds(lambda: one_pass(paths, args.rate, fresh()), args.repeats)
        real_write = audio_module.write_entry
        audio_module.write_entry = write_entry_with_fsync
        try: passes['fill cache (fsync each)'] = median_seconds(lambda: one_pass(paths, args.rate, fresh()), args.repeats)
        finally: audio_module.write_entry = real_write
        warm = fresh(); one_pass(paths, args.rate, warm)
        passes['read cache (mmap)'] = median_seconds(lambda: one_pass(paths, args.rate, warm), args.repeats)
        assert warm.hits == args.repeats * n, (warm.hits, n)
        size = sum(p.stat().st_size for p in warm.root.rglob('*.npy'))

        cores = audio_workers()
        prepared = {}
        for workers in (1, cores):
            def prepare():
                kept = prepare_audio(clips, args.rate, fresh(), progress=False, workers=workers)
                assert len(kept) == len(clips)
            prepared[workers] = median_seconds(prepare, args.repeats)
        headroom = parallel_headroom(cores)
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"audio I/O on {source} -> {args.rate} Hz; medians of {args.repeats}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs ({cores} usable), torch threads {torch.get_num_threads()}")
    print(f"\n1. per-clip loading, one process, {n} clips (load + resample + 30 s pad + 3 x 10 s segments)")
    print(f"{'':26}{'seconds':>9}{'clips/s':>9}{'vs decode':>11}")
    for name, seconds in passes.items():
        print(f"{name:26}{seconds:9.2f}{n / seconds:9.1f}{passes['decode (no cache)'] / seconds:10.2f}x")
    print(f"reading the cache is {passes['decode (no cache)'] / passes['read cache (mmap)']:.1f}x faster than decoding; filling it costs "
          f"{passes['fill cache (rename)'] / passes['decode (no cache)']:.2f}x a plain decode (was {passes['fill cache (fsync each)'] / passes['decode (no cache)']:.2f}x "
          f"with an fsync per entry); cache size {size / 2**20:.1f} MiB ({size / n / 2**10:.0f} KiB/clip)")
    print(f"\n2. prepare_audio over {len(clips)} clips (decode, resample, fill a fresh cache, one sync)")
    for workers, seconds in prepared.items():
        print(f"workers={workers:<3}{seconds:8.2f} s {len(clips) / seconds:8.1f} clips/s")
    print(f"{cores} workers vs 1: {prepared[1] / prepared[cores]:.2f}x; the same pool on pure CPU work (no I/O): {headroom:.2f}x "
          f"(what this machine's {cores} cores give right now; load average {os.getloadavg()[0]:.1f})")


if __name__ == '__main__':
    main()
