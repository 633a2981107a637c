"Data loading in worker processes: the same batches and the same run for any num_workers; prepare_audio on a pool; atomic cache entries."
import json, subprocess, sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import laretrieval.audio as audio_module
from laretrieval.audio import AudioCache, load_audio, write_entry
from laretrieval.augment import AugmentConfig, AugmentDataset, MixPair
from laretrieval.corpora import POOL_MIN_FILES, LoadReport, prepare_audio
from laretrieval.datasets import AudioCaptionDataset, Clip, collate, loader_options, make_builtin_set, split_clips
from laretrieval.train import TIMING_KEYS, EpochBatches
from tiny import offline_env, set_args


def training_set(seed:int=5):
    "A training set drawing everything at random: crop offsets, one caption per clip, gain, word edits and two-clip mixes."
    clips = split_clips(make_builtin_set(24, seed=0, sample_rate=8000), 'train')
    base = AudioCaptionDataset(clips, 8000, max_seconds=1.5, random_crop=True, random_caption=True, seed=seed)
    mixes = [MixPair(f'mix:{a.clip_id}|{b.clip_id}', a.clip_id, b.clip_id, 10.0, 'two sounds at once') for a, b in zip(clips, clips[1:])]
    return AugmentDataset(base, AugmentConfig(mix_p=0.5, gain_p=0.5, word_p=0.5), mixes, seed=seed)


def epoch_batches(workers:int, epochs=(1, 2))->list:
    "Every batch of `epochs` as the trainer's loader makes them (persistent workers: the epoch must reach them)."
    data = training_set()
    sampler = EpochBatches(len(data), batch_size=4, seed=5)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator().manual_seed(5),
                        **loader_options(workers, persistent=True))
    out = []
    for epoch in epochs:
        data.set_epoch(epoch); sampler.set_epoch(epoch)
        out.append([(b['waveforms'], b['lengths'], b['clip_ids'], b['captions']) for b in loader])
    return out


def test_batches_are_the_same_for_0_and_2_workers_over_two_epochs():
    torch.manual_seed(0); serial = epoch_batches(0)
    torch.manual_seed(1); workers = epoch_batches(2)  # the global generator plays no part
    for epoch_serial, epoch_workers in zip(serial, workers):
        assert len(epoch_serial) == len(epoch_workers) > 0
        for (w0, n0, ids0, caps0), (w2, n2, ids2, caps2) in zip(epoch_serial, epoch_workers):
            assert torch.equal(w0, w2) and torch.equal(n0, n2) and ids0 == ids2 and caps0 == caps2
    flat = lambda epoch: [x for b in epoch for x in b[2]]
    assert any(i.startswith('mix:') for e in serial for i in flat(e))  # mixes were drawn
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(*serial))   # and epoch 2 drew anew


def wav_files(folder:Path, n:int)->list[Path]:
    paths = []
    for k in range(n):
        paths.append(folder / f'{k:03d}.flac')
        sf.write(paths[-1], (0.05 * np.sin(np.arange(1600 + 7 * k) / (3 + k % 5))).astype(np.float32), 16000)
    return paths


def test_prepare_audio_on_a_pool_matches_the_serial_check(tmp_path):
    paths = wav_files(tmp_path, POOL_MIN_FILES + 6)
    paths[3].write_bytes(b'corrupt: not a FLAC stream')
    sf.write(paths[9], np.full(800, np.nan, np.float32), 16000, subtype='FLOAT', format='WAV')  # NaN samples
    clips = [Clip(p.name, ['x'], 'train', path=p) for p in paths] + [Clip('gone', ['y'], 'train', path=tmp_path / 'gone.wav')]
    clips.append(Clip('again', ['z'], 'train', path=paths[3]))  # a bad file shared by two clips: both counted
    runs = {}
    for workers in (1, 2):
        cache, report = AudioCache(tmp_path / f'cache{workers}'), LoadReport()
        kept = prepare_audio(clips, 32000, cache, on_error='skip', report=report, progress=False, workers=workers)
        entries = {p.relative_to(cache.root).name: np.load(p) for p in cache.root.rglob('*.npy')}
        runs[workers] = dict(kept=[c.clip_id for c in kept], skipped=report.skipped, kept_count=report.kept, counts=(cache.hits, cache.misses), entries=entries)
    one, pool = runs[1], runs[2]
    assert pool['kept'] == one['kept'] and pool['skipped'] == one['skipped'] and pool['kept_count'] == one['kept_count']
    assert one['skipped'] == Counter({'undecodable audio': 2, 'non-finite audio': 1, 'missing audio': 1})
    assert pool['counts'] == one['counts'] == (0, len(paths))  # every existing file looked up once, none cached before
    assert sorted(pool['entries']) == sorted(one['entries']) and len(one['entries']) == len(paths) - 2
    assert all(np.array_equal(pool['entries'][k], one['entries'][k]) for k in one['entries'])
    assert np.array_equal(one['entries'][AudioCache(tmp_path).entry(paths[0], 32000).name], load_audio(paths[0], 32000))
    with pytest.raises(audio_module.AudioFileError, match='003.flac'):  # the first bad file in clip order
        prepare_audio(clips, 32000, progress=False, workers=2)


def test_a_cache_entry_is_never_visible_half_written(tmp_path, monkeypatch):
    path = wav_files(tmp_path, 1)[0]
    cache = AudioCache(tmp_path / 'cache')
    entry = cache.entry(path, 16000)
    def dies_half_way(f, array, *args, **kwargs):
        f.write(b'\x93NUMPY half an entry'); raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a write
    monkeypatch.setattr(audio_module.np, 'save', dies_half_way)
    with pytest.raises(KeyboardInterrupt): load_audio(path, 16000, cache)
    assert [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()] == []  # neither the entry nor its temporary file
    monkeypatch.undo()
    def rename_fails(src, dst): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(audio_module.os, 'replace', rename_fails)
    with pytest.raises(OSError): write_entry(entry, np.ones(4, np.float32))
    assert not entry.exists() and list(entry.parent.iterdir()) == []
    monkeypatch.undo()
    wave = load_audio(path, 16000, cache)
    assert isinstance(cache.get(path, 16000), np.memmap) and np.array_equal(cache.get(path, 16000), wave)


CLI = [sys.executable, '-m', 'laretrieval.cli', 'train', '--quiet']
RUN = dict(builtin_clips=60, audio_width=8, embed_dim=32, text_trainable_layers=1, epochs=2, batch_size=8,
           num_threads=1, seed=3, device='cpu', gain_p=0.5, word_p=0.5)


@pytest.mark.slow
def test_a_tiny_run_gives_the_same_metrics_with_0_and_2_workers(tmp_path):
    for workers in (0, 2):
        done = subprocess.run([*CLI, *set_args({**RUN, 'num_workers': workers}), '--output-dir', str(tmp_path / str(workers))],
                              capture_output=True, text=True, env=offline_env(), timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / '0' / 'metrics.json').read_text()) == json.loads((tmp_path / '2' / 'metrics.json').read_text())
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / '0' / 'history.csv').drop(columns=['seconds']),
                                  pd.read_csv(tmp_path / '2' / 'history.csv').drop(columns=['seconds']))
    logs = {w: [json.loads(l) for l in (tmp_path / str(w) / 'log.jsonl').read_text().splitlines() if l.strip()] for w in (0, 2)}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
    assert strip(logs[0]) == strip(logs[2])
    steps = [r for r in logs[2] if r['kind'] == 'step']
    assert steps and all(0 <= r['data_wait'] <= 1 and r['clips_per_s'] > 0 for r in steps)  # the step log reports the wait
    assert all('data_wait' in r for r in logs[2] if r['kind'] == 'epoch')
