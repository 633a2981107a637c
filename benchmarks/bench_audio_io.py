"""Audio input speed: clips/second for load + resample + segment, without the cache, filling it (cold) and from it.

Uses ESC-50 from ../shared/data/esc50 (16 kHz FLAC, 5 s) when present, else generates 5 s 16 kHz FLAC clips.
Each clip is decoded, resampled to 32 kHz (PaSST's rate), padded to 30 s and cut into 3 segments of 10 s, as the
training loader does. Runs single-process; the ratio is what the cache saves per epoch after the first.

    python benchmarks/bench_audio_io.py [--clips 400] [--rate 32000]
"""
import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from laretrieval.audio import AudioCache, load_audio, segment
from laretrieval.corpora import read_esc50

SHARED = Path(os.environ.get('LARETRIEVAL_SHARED', Path(__file__).resolve().parents[2] / 'shared'))


def clip_paths(n, scratch):
    esc50 = SHARED / 'data' / 'esc50'
    if esc50.is_dir():
        return [c.path for c in read_esc50(esc50)[:n]], 'ESC-50 (16 kHz FLAC, 5 s)'
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(scratch / f'clip{i:04d}.flac')
        sf.write(paths[-1], (0.1 * rng.standard_normal(80000)).astype(np.float32), 16000)
    return paths, 'generated noise (16 kHz FLAC, 5 s)'


def one_pass(paths, rate, cache):
    "Seconds spent loading (decode or cache read, resample) and segmenting (30 s pad, 3 x 10 s) over all paths."
    load = cut = 0.0
    for path in paths:
        start = time.perf_counter()
        wave = torch.from_numpy(load_audio(path, rate, cache))
        middle = time.perf_counter()
        segments, mask = segment(wave, segment_len=10 * rate, max_segments=3)
        load, cut = load + middle - start, cut + time.perf_counter() - middle
    return load, cut


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--clips', type=int, default=400)
    parser.add_argument('--rate', type=int, default=32000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        paths, source = clip_paths(args.clips, scratch)
        cache = AudioCache(scratch / 'cache')
        no_cache = one_pass(paths, args.rate, None)    # also brings the FLAC files into the OS page cache
        cold = one_pass(paths, args.rate, cache)       # decode + resample + write each entry
        warm = one_pass(paths, args.rate, cache)       # read each entry
        assert cache.hits == len(paths) and cache.misses == len(paths)
        size = sum(p.stat().st_size for p in (scratch / 'cache').rglob('*.npy'))
    print(f"audio I/O on {source}: {len(paths)} clips -> {args.rate} Hz, 3 x 10 s segments")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    n = len(paths)
    print(f"{'':20}{'load s':>8}{'segment s':>11}{'total s':>9}{'clips/s':>9}{'load only clips/s':>19}")
    for name, (load, cut) in (('no cache (decode)', no_cache), ('cache cold (fill)', cold), ('cache warm (read)', warm)):
        print(f"{name:20}{load:8.2f}{cut:11.2f}{load + cut:9.2f}{n / (load + cut):9.1f}{n / load:19.1f}")
    print(f"warm cache vs decoding: load {no_cache[0] / warm[0]:.1f}x faster, load+resample+segment "
          f"{sum(no_cache) / sum(warm):.2f}x faster; filling the cache costs {cold[0] / no_cache[0]:.2f}x a plain load; "
          f"cache size {size / 2**20:.1f} MiB ({size / n / 2**10:.0f} KiB/clip)")

if __name__ == '__main__':
    main()
