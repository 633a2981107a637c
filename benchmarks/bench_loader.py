"""Training throughput and the data-wait share with the data loaded in the training process vs in worker processes.

For each data set the same short run (default model and loss, batch 32, random crops and captions, gain and word
augmentation, 32 kHz) is trained with `num_workers` 0 and 2 (persistent, as `train` makes them). Reported from
the run's own log: clips/s of full steps (loading + forward + backward + optimizer) and the data-wait share (time
blocked on the loader / step time), over all steps of all epochs, and the median step; the validation metrics of
both runs must be identical (workers change where items are made, not what they are).

Data sets: the built-in generated set (in memory: generating is free, cropping and augmenting are the work) and
ESC-50 folds 1-4 from ../shared/data/esc50 (16 kHz FLAC, resampled to 32 kHz) with the audio cache off (decode
and resample every item, every epoch) and warm (memory-mapped `.npy` entries); ESC-50 is skipped when absent.

    python benchmarks/bench_loader.py [--train-clips 320] [--epochs 2] [--workers 2]
"""
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from laretrieval.audio import AudioCache
from laretrieval.augment import AugmentConfig, AugmentDataset
from laretrieval.config import ExperimentConfig
from laretrieval.corpora import prepare_audio, read_esc50
from laretrieval.datasets import AudioCaptionDataset, make_builtin_set, split_clips
from laretrieval.model import build_model
from laretrieval.objectives import build_loss
from laretrieval.train import train

SHARED = Path(os.environ.get('LARETRIEVAL_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
RATE = 32000


def esc50_clips():
    "ESC-50's clips with train/val splits (fold 4 and 15% of the rest are left out of training), or None."
    folder = SHARED / 'data' / 'esc50'
    if not folder.is_dir(): return None
    clips = read_esc50(folder)
    for k, clip in enumerate(clips): clip.split = 'val' if k % 7 == 0 else 'train'
    return clips


def run(name, clips, seconds, cache, workers, args, scratch):
    "Train once; the log's step and epoch records."
    cfg = ExperimentConfig(sample_rate=RATE, epochs=args.epochs, batch_size=32, num_workers=workers, seed=0,
                           gain_p=0.5, word_p=0.5, warmup_epochs=0.5, device='cpu')
    train_clips, val_clips = split_clips(clips, 'train')[:args.train_clips], split_clips(clips, 'val')[:64]
    base = AudioCaptionDataset(train_clips, RATE, seconds, random_crop=True, random_caption=True, cache=cache, seed=cfg.seed)
    train_set = AugmentDataset(base, AugmentConfig(gain_p=cfg.gain_p, word_p=cfg.word_p), seed=cfg.seed)
    val_set = AudioCaptionDataset(val_clips, RATE, seconds, cache=cache)
    torch.manual_seed(0)
    out = scratch / f'{name}-{workers}'; out.mkdir()
    train(build_model(cfg), build_loss(cfg), train_set, val_set, cfg, progress=False, output_dir=out)
    records = [json.loads(l) for l in (out / 'log.jsonl').read_text().splitlines() if l.strip()]
    steps = [r for r in records if r['kind'] == 'step']
    waited = sum(r['data_wait'] * r['step_s'] for r in steps); seconds_all = sum(r['step_s'] for r in steps)
    return dict(clips_per_s=len(steps) * cfg.batch_size / seconds_all, data_wait=waited / seconds_all,
                median_step_clips_per_s=statistics.median(r['clips_per_s'] for r in steps),
                median_step_wait=statistics.median(r['data_wait'] for r in steps), steps=len(steps),
                metrics={k: v for k, v in records[-1].items() if k.startswith('val_')})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--train-clips', type=int, default=320, help='training clips per data set (10 steps of 32 per epoch)')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--workers', type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sets = [('built-in (in memory, 4 s)', make_builtin_set(600, 0, RATE, seconds=4.0), 4.0, None)]
        esc50 = esc50_clips()
        if esc50 is not None:
            warm = AudioCache(scratch / 'cache')
            prepare_audio(esc50, RATE, warm, progress=False)
            sets += [('ESC-50 32 kHz, cache off', esc50, 5.0, None), ('ESC-50 32 kHz, cache warm', esc50, 5.0, warm)]
        for k, (name, clips, seconds, cache) in enumerate(sets):
            results = {w: run(f'set{k}', clips, seconds, cache, w, args, scratch) for w in (0, args.workers)}
            same = results[0]['metrics'] == results[args.workers]['metrics']
            rows += [(name, w, r, same) for w, r in results.items()]
    print(f"training throughput, {args.epochs} epochs x {args.train_clips} clips, batch 32, {RATE} Hz, default model; "
          f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"{'data':28}{'workers':>8}{'steps':>6}{'clips/s':>9}{'data wait':>11}{'median step clips/s':>21}{'median wait':>13}  same metrics")
    for name, w, r, same in rows:
        print(f"{name:28}{w:8}{r['steps']:6}{r['clips_per_s']:9.1f}{r['data_wait']:10.0%} {r['median_step_clips_per_s']:20.1f}"
              f"{r['median_step_wait']:12.0%}   {same}")
    for name, w, r, same in rows:
        if w: print(f"{name}: val {r['metrics']}")


if __name__ == '__main__':
    main()
