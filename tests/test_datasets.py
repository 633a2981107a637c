"Audio I/O and corpus readers: the real caption files in shared/, every bad-input case, the cache, the downloader."
import csv
import json
import logging
import os
import shutil
import sys
import threading
import zipfile
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
import torch

from laretrieval.audio import AudioCache, AudioFileError, load_audio, segment_mask
from laretrieval.config import load_settings
from laretrieval.corpora import (LoadReport, normalize_caption, prepare_audio, read_audiocaps, read_caption_csv,
                                 read_clotho, read_esc50, read_folder, read_wavcaps)
from laretrieval.datasets import AudioCaptionDataset, Clip, collate
from laretrieval.download import CLOTHO_V21_MD5, download_clotho, download_file, extract_archive, md5sum
from laretrieval.protocol import (clotho_freesound_ids, exclude_freesound_ids, read_id_list, read_multi_positive,
                                  relevance_matrix)

CLOTHO_COUNTS = {'development': 3839, 'validation': 1045, 'evaluation': 1045}


def tone(seconds=0.1, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, 1)


def stand_in_audio(folder, names, sr=16000):
    "A 0.1 s wav file for every name (the real audio is not in shared/)."
    folder.mkdir(parents=True, exist_ok=True)
    wave = tone(0.1, sr)
    for name in names: sf.write(folder / name, wave, sr)


def csv_column(path, column):
    return pd.read_csv(path, dtype=str, keep_default_na=False)[column].tolist()


# ---------------------------------------------------------------- the real caption files (Must show)

@pytest.mark.slow  # every Clotho caption file, stand-in audio for each clip
def test_real_clotho_csvs_load_3839_1045_1045_clips_with_5_captions(shared_data, tmp_path):
    root = shared_data / 'clotho_captions'
    for split, n in CLOTHO_COUNTS.items():
        names = csv_column(root / f'clotho_captions_{split}.csv', 'file_name')
        stand_in_audio(tmp_path / split, names)
        report = LoadReport()
        clips = read_clotho(root, split, audio_dir=tmp_path / split, report=report)
        assert len(clips) == n and report.kept == n and not report.skipped
        assert [c.clip_id for c in clips] == names
        assert all(len(c.captions) == 5 for c in clips)
        assert {c.split for c in clips} == {dict(development='train', validation='val', evaluation='test')[split]}
        first = pd.read_csv(root / f'clotho_captions_{split}.csv', dtype=str, nrows=1).iloc[0]
        assert clips[0].captions == [first[f'caption_{i}'] for i in range(1, 6)]
    # evaluation: 5225 caption items (training-style) or 1045 clip items (evaluation-style), audio at 32 kHz
    clips = read_clotho(root, 'evaluation', audio_dir=tmp_path / 'evaluation')
    by_caption = AudioCaptionDataset(clips, 32000, 30.0, per_caption=True)
    by_clip = AudioCaptionDataset(clips, 32000, 30.0)
    assert (len(by_caption), len(by_clip)) == (5225, 1045)
    item = by_clip[0]
    assert item['audio'].shape == (3200,) and item['captions'] == clips[0].captions


def test_clotho_captions_normalised_on_request(shared_data, tmp_path):
    root = shared_data / 'clotho_captions'
    clips = read_clotho(root, 'validation', check_files=False, normalize=True)
    captions = [c for clip in clips for c in clip.captions]
    assert len(captions) == 5225
    assert all(c == c.lower() and not any(p in c for p in ".,;:!?\"'()") for c in captions)
    raw = read_clotho(root, 'validation', check_files=False)
    assert [normalize_caption(c) for c in raw[0].captions] == clips[0].captions


def test_shared_clotho_evaluation_csv_has_zenodos_md5(shared_data):
    "The md5 table is Zenodo's: the one caption file in shared/ that is byte-identical to the record matches it."
    assert md5sum(shared_data / 'clotho_captions' / 'clotho_captions_evaluation.csv') == \
        CLOTHO_V21_MD5['clotho_captions_evaluation.csv']


@pytest.mark.slow  # the AudioCaps caption files, stand-in audio for each clip
def test_real_audiocaps_csvs_load(shared_data, tmp_path):
    root = shared_data / 'audiocaps_captions'
    for split, per_clip in (('train', 1), ('val', 5), ('test', 5)):
        names = csv_column(root / f'{split}.csv', 'file_name')
        clips = read_audiocaps(root, split, audio_dir=tmp_path / split, check_files=False)
        assert [c.clip_id for c in clips] == names and len(clips) == len(set(names))
        assert all(len(c.captions) == per_clip for c in clips)
        assert all(c.path == tmp_path / split / c.clip_id for c in clips)
    assert len(clips) == 957
    stand_in_audio(tmp_path / 'test', names)
    clips = read_audiocaps(root, 'test', audio_dir=tmp_path / 'test')
    assert len(clips) == 957 and clips[0].captions[0] == csv_column(root / 'test.csv', 'caption_1')[0]


def test_real_esc50_loads_1600_clips_and_resamples_16k_to_32k(shared_data):
    clips = read_esc50(shared_data / 'esc50')
    assert len(clips) == 1600
    assert Counter(c.meta['category'] for c in clips) == Counter({k: 32 for k in set(c.meta['category'] for c in clips)})
    assert len({c.meta['category'] for c in clips}) == 50
    assert [c.captions[0] for c in clips] == csv_column(shared_data / 'esc50' / 'metadata.csv', 'caption')
    assert len(read_esc50(shared_data / 'esc50', folds=(1,))) == 400
    for clip in clips[:3]:
        native, sr = sf.read(clip.path, dtype='float32')
        assert (sr, native.shape) == (16000, (80000,))
        wave = load_audio(clip.path, 32000)
        assert wave.shape == (160000,)  # 5 s at 32 kHz
        np.testing.assert_allclose(wave, soxr.resample(native, 16000, 32000, quality='HQ'), atol=1e-6)
    lengths = torch.tensor([160000])
    assert segment_mask(lengths, 320000, 3).tolist() == [[True, False, False]]  # 5 s fills 1 of 3 10-s segments


# ---------------------------------------------------------------- audio formats, cropping, collate

@pytest.mark.parametrize('ext', ['wav', 'flac', 'ogg', 'mp3'])
def test_every_format_loads_as_mono_at_the_target_rate(tmp_path, ext):
    sf.write(tmp_path / f'a.{ext}', tone(1.0, 16000, channels=2), 16000)
    wave = load_audio(tmp_path / f'a.{ext}', 32000)
    assert wave.dtype == np.float32 and wave.shape == (32000,)
    assert 0.25 < np.abs(wave).max() < 0.35  # both channels carry the same 0.3 tone


def test_training_crops_at_random_offsets_evaluation_at_the_start(tmp_path):
    wave = np.arange(8000, dtype=np.float32) / 8000
    sf.write(tmp_path / 'ramp.wav', wave, 8000, subtype='FLOAT')
    clip = Clip('ramp', ['a ramp'], 'train', path=tmp_path / 'ramp.wav')
    train = AudioCaptionDataset([clip], 8000, max_seconds=0.25, random_crop=True)
    evaluation = AudioCaptionDataset([clip], 8000, max_seconds=0.25)
    def start(epoch):
        train.set_epoch(epoch); return float(train[0]['audio'][0])
    starts = {start(epoch) for epoch in range(1, 6)}  # a new offset each epoch, the same one within an epoch
    assert len(starts) > 1 and start(3) == start(3) and all(len(train[0]['audio']) == 2000 for _ in range(2))
    assert torch.equal(evaluation[0]['audio'], evaluation[0]['audio'])
    np.testing.assert_array_equal(evaluation[0]['audio'].numpy(), wave[:2000])


def test_collate_keeps_the_training_keys_and_adds_the_segment_mask(tmp_path):
    for name, seconds in (('long', 2.5), ('short', 0.4)): sf.write(tmp_path / f'{name}.wav', tone(seconds, 1000), 1000)
    clips = [Clip(n, [f'{n} one', f'{n} two'], 'train', path=tmp_path / f'{n}.wav') for n in ('long', 'short')]
    items = [AudioCaptionDataset(clips, 1000, max_seconds=3.0, per_caption=True)[i] for i in (0, 1, 2)]
    batch = collate(items, segment_len=1000, max_segments=3)
    assert batch['waveforms'].shape == (3, 3000) and batch['lengths'].tolist() == [2500, 2500, 400]
    assert batch['clip_ids'] == ['long', 'long', 'short'] and batch['captions'] == [['long one'], ['long two'], ['short one']]
    assert batch['segment_mask'].tolist() == [[True, True, True], [True, True, True], [True, False, False]]
    segments = batch['waveforms'].view(3, 3, 1000)
    assert segments[2, 1:].abs().sum() == 0 and segments[2, 0, :400].abs().sum() > 0
    assert set(collate(items)) == {'waveforms', 'lengths', 'clip_ids', 'captions'}


# ---------------------------------------------------------------- the cache

def test_cache_returns_the_same_audio_and_writes_one_entry_atomically(tmp_path):
    sf.write(tmp_path / 'a.flac', tone(0.5, 16000), 16000)
    cache = AudioCache(tmp_path / 'cache')
    direct = load_audio(tmp_path / 'a.flac', 32000)
    first, second = load_audio(tmp_path / 'a.flac', 32000, cache), load_audio(tmp_path / 'a.flac', 32000, cache)
    np.testing.assert_array_equal(first, direct); np.testing.assert_array_equal(second, direct)
    assert (cache.hits, cache.misses) == (1, 1)
    files = [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()]
    assert [p.suffix for p in files] == ['.npy']  # no temporary file left behind
    load_audio(tmp_path / 'a.flac', 16000, cache)  # another rate is another entry
    assert len(list((tmp_path / 'cache').rglob('*.npy'))) == 2


def test_cache_sees_a_changed_file_and_rebuilds_a_broken_entry(tmp_path):
    path = tmp_path / 'a.wav'
    sf.write(path, tone(0.5, 8000), 8000)
    cache = AudioCache(tmp_path / 'cache')
    load_audio(path, 8000, cache)
    sf.write(path, tone(0.25, 8000), 8000)  # same name, new content
    assert load_audio(path, 8000, cache).shape == (2000,)
    cache.entry(path, 8000).write_bytes(b'garbage')
    assert load_audio(path, 8000, cache).shape == (2000,)
    assert np.load(cache.entry(path, 8000)).shape == (2000,)


def test_cache_setting_turns_it_off(tmp_path, monkeypatch):
    (tmp_path / 'settings.ini').write_text(f'[laretrieval]\ncache_dir = {tmp_path / "c"}\n')
    assert AudioCache.from_settings(load_settings(tmp_path / 'settings.ini')).enabled
    monkeypatch.setenv('LARETRIEVAL_AUDIO_CACHE', 'off')
    cache = AudioCache.from_settings(load_settings(tmp_path / 'settings.ini'))
    assert cache.root == tmp_path / 'c' / 'audio' and not cache.enabled
    sf.write(tmp_path / 'a.wav', tone(0.1), 16000)
    load_audio(tmp_path / 'a.wav', 32000, cache)
    assert not (tmp_path / 'c').exists()


def test_dataset_reads_through_the_cache(tmp_path):
    sf.write(tmp_path / 'a.wav', tone(0.2), 16000)
    cache = AudioCache(tmp_path / 'cache')
    ds = AudioCaptionDataset([Clip('a', ['x'], 'train', path=tmp_path / 'a.wav')], 32000, 30.0, cache=cache)
    ds[0]; ds[0]
    assert (cache.hits, cache.misses) == (1, 1)


# ---------------------------------------------------------------- bad input: error naming the file/row, or a counted skip

def bad_files(folder):
    "One audio file for each way a file can be unusable, plus a good one."
    folder.mkdir(exist_ok=True)
    sf.write(folder / 'good.wav', tone(0.5), 16000)
    (folder / 'corrupt.flac').write_bytes(b'fLaC' + os.urandom(2000))
    sf.write(folder / 'full.wav', tone(0.5), 16000)
    data = (folder / 'full.wav').read_bytes()
    (folder / 'truncated.wav').write_bytes(data[:len(data) // 2])
    sf.write(folder / 'full.flac', tone(0.5), 16000)
    data = (folder / 'full.flac').read_bytes()
    (folder / 'truncated.flac').write_bytes(data[:len(data) // 2])
    sf.write(folder / 'empty.wav', np.zeros(0, np.float32), 16000)
    nan = tone(0.5); nan[100] = np.nan
    sf.write(folder / 'nan.wav', nan, 16000, subtype='FLOAT')
    for name in ('good.wav', 'full.wav', 'full.flac'): assert sf.info(folder / name).frames == 8000
    return folder


@pytest.mark.parametrize('name, reason, words', [
    ('corrupt.flac', 'undecodable', 'cannot be decoded'),
    ('truncated.wav', 'truncated', 'is truncated'),
    ('truncated.flac', 'undecodable', 'cannot be decoded'),
    ('empty.wav', 'empty', 'has zero samples'),
    ('nan.wav', 'non-finite', 'contains NaN'),
])
def test_unusable_audio_is_an_error_naming_the_file(tmp_path, name, reason, words):
    folder = bad_files(tmp_path / 'audio')
    with pytest.raises(AudioFileError, match=f'{name}.*{words}') as err:
        load_audio(folder / name, 32000)
    assert err.value.reason == reason
    ds = AudioCaptionDataset([Clip(name, ['x'], 'train', path=folder / name)], 32000, 30.0)
    with pytest.raises(AudioFileError, match=name):
        ds[0]


def test_missing_audio_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.wav'):
        load_audio(tmp_path / 'nowhere.wav', 32000)


def test_truncated_mp3_is_detected(tmp_path):
    sf.write(tmp_path / 'full.mp3', tone(2.0), 16000)
    data = (tmp_path / 'full.mp3').read_bytes()
    (tmp_path / 'cut.mp3').write_bytes(data[:len(data) // 2])
    assert load_audio(tmp_path / 'full.mp3', 16000).shape == (32000,)
    with pytest.raises(AudioFileError, match='cut.mp3 is truncated'):
        load_audio(tmp_path / 'cut.mp3', 16000)


def test_audio_check_counts_each_bad_file_when_asked_to_skip(tmp_path, caplog):
    folder = bad_files(tmp_path / 'audio')
    names = ['good.wav', 'corrupt.flac', 'truncated.wav', 'truncated.flac', 'empty.wav', 'nan.wav', 'gone.wav']
    clips = [Clip(n, ['x'], 'train', path=folder / n) for n in names]
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger='laretrieval'):
        kept = prepare_audio(clips, 32000, on_error='skip', report=report, progress=False)
    assert [c.clip_id for c in kept] == ['good.wav'] and report.kept == 1
    assert report.skipped == Counter({'undecodable audio': 2, 'truncated audio': 1, 'empty audio': 1,
                                      'non-finite audio': 1, 'missing audio': 1})
    assert 'skipped 6' in caplog.text and 'gone.wav' in caplog.text
    with pytest.raises(AudioFileError, match='corrupt.flac'):
        prepare_audio(clips, 32000, progress=False)


def write_clotho_csv(path, rows):
    header = ['file_name'] + [f'caption_{i}' for i in range(1, 6)]
    with open(path, 'w', newline='') as f:
        w = csv.writer(f); w.writerow(header); w.writerows(rows)


def test_missing_file_and_empty_caption_name_the_row_or_are_counted(tmp_path, caplog):
    stand_in_audio(tmp_path / 'evaluation', ['a.wav', 'b.wav'])
    write_clotho_csv(tmp_path / 'clotho_captions_evaluation.csv', [
        ['a.wav', 'one', 'two', 'three', 'four', 'five'],
        ['missing.wav', 'one', 'two', 'three', 'four', 'five'],
        ['b.wav', 'one', '', 'three', 'four', 'five']])
    with pytest.raises(FileNotFoundError, match=r'clotho_captions_evaluation.csv line 3: .*missing.wav'):
        read_clotho(tmp_path, 'evaluation')
    (tmp_path / 'evaluation' / 'missing.wav').write_bytes((tmp_path / 'evaluation' / 'a.wav').read_bytes())
    with pytest.raises(ValueError, match=r"line 4: 'b.wav' has an empty caption_2"):
        read_clotho(tmp_path, 'evaluation')
    (tmp_path / 'evaluation' / 'missing.wav').unlink()
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger='laretrieval'):
        clips = read_clotho(tmp_path, 'evaluation', on_error='skip', report=report)
    assert [(c.clip_id, len(c.captions)) for c in clips] == [('a.wav', 5), ('b.wav', 4)]
    assert report.skipped == Counter({'missing audio': 1, 'empty caption': 1}) and report.kept == 2
    assert 'missing.wav' in caplog.text and 'skipped 2' in caplog.text


@pytest.mark.parametrize('reader, header, missing', [
    (lambda d: read_clotho(d, 'evaluation'), 'file_name,caption_1,caption_2,caption_3,caption_4', 'caption_5'),
    (lambda d: read_caption_csv(d / 'clotho_captions_evaluation.csv', d, 'test'), 'file,caption', 'file_name'),
    (lambda d: read_caption_csv(d / 'clotho_captions_evaluation.csv', d, 'test'), 'file_name,text', 'caption'),
])
def test_csv_missing_a_column_is_an_error_naming_the_file(tmp_path, reader, header, missing):
    (tmp_path / 'clotho_captions_evaluation.csv').write_text(header + '\n')
    with pytest.raises(ValueError, match=f'clotho_captions_evaluation.csv: missing.*{missing}'):
        reader(tmp_path)


def test_esc50_metadata_missing_a_column_names_the_file(tmp_path):
    (tmp_path / 'metadata.csv').write_text('filename,fold,target\n1-1-A-0.flac,1,0\n')
    with pytest.raises(ValueError, match=r"metadata.csv: missing column\(s\) \['category'\]"):
        read_esc50(tmp_path)


def test_latin1_csv_is_an_error_unless_its_encoding_is_given(tmp_path):
    stand_in_audio(tmp_path, ['a.wav'])
    (tmp_path / 'c.csv').write_bytes('file_name,caption\na.wav,caf\xe9 noise\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'c.csv is not valid UTF-8: line 2, byte offset 27 .*re-save it as UTF-8'):
        read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train')
    clips = read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train', encoding='latin-1')
    assert clips[0].captions == ['caf\xe9 noise']


def test_caption_per_row_csv_collects_each_clips_captions(tmp_path):
    stand_in_audio(tmp_path, ['a.wav', 'b.wav'])
    (tmp_path / 'c.csv').write_text('file_name,caption\na.wav,first\nb.wav,only\na.wav,second\n')
    clips = read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train')
    assert [(c.clip_id, c.captions) for c in clips] == [('a.wav', ['first', 'second']), ('b.wav', ['only'])]


# ---------------------------------------------------------------- WavCaps, exclusion lists, folders

def wavcaps_fixture(folder):
    "A small FreeSound json in WavCaps' layout, with one item of each kind of problem."
    folder.mkdir(exist_ok=True)
    items = [dict(id='180913', file_name='UK Mello.wav', caption='A traditional ringtone is playing.', duration=3.2,
                  tags=['ringtone'], download_link='https://example.invalid/180913.wav'),
             dict(id='100032', caption='A dog barks.', duration=5.0),
             dict(id='555', caption='Birds sing.', duration=1.0),
             dict(id='777', caption='', duration=1.0),
             dict(caption='no id here', duration=1.0),
             dict(id='999', caption='A file that was never downloaded.', duration=1.0)]
    (folder / 'fsd_final.json').write_text(json.dumps(dict(num_captions_per_audio=1, data=items)))
    stand_in_audio(folder / 'FreeSound', [])
    for stem in ('180913', '100032', '555', '777'): sf.write(folder / 'FreeSound' / f'{stem}.flac', tone(0.1), 16000)
    return folder


def test_wavcaps_json_loads_and_bad_items_name_the_item(tmp_path):
    folder = wavcaps_fixture(tmp_path / 'wavcaps')
    with pytest.raises(ValueError, match="fsd_final.json item 3: id '777' has an empty caption"):
        read_wavcaps(folder / 'fsd_final.json', folder / 'FreeSound')
    report = LoadReport()
    clips = read_wavcaps(folder / 'fsd_final.json', folder / 'FreeSound', on_error='skip', report=report)
    assert [c.clip_id for c in clips] == ['FreeSound/180913', 'FreeSound/100032', 'FreeSound/555']
    assert clips[0].captions == ['A traditional ringtone is playing.'] and clips[0].meta['freesound_id'] == '180913'
    assert report.skipped == Counter({'empty caption': 1, 'no captions': 1, 'missing id': 1, 'missing audio': 1})


def test_wavcaps_clips_overlapping_clotho_are_dropped_and_counted(tmp_path):
    folder = wavcaps_fixture(tmp_path / 'wavcaps')
    clips = read_wavcaps(folder / 'fsd_final.json', folder / 'FreeSound', on_error='skip')
    (tmp_path / 'dcase2024_task6_excluded_freesound_ids.csv').write_text('id\n180913\n424242\n')
    (tmp_path / 'clotho_metadata_evaluation.csv').write_text(
        'file_name,keywords,sound_id,sound_link\nDog.wav,dog,100032,https://freesound.org/people/x/sounds/100032\n')
    ids = read_id_list(tmp_path / 'dcase2024_task6_excluded_freesound_ids.csv') | \
          clotho_freesound_ids([tmp_path / 'clotho_metadata_evaluation.csv'])
    report = LoadReport()
    kept = exclude_freesound_ids(clips, ids, report)
    assert [c.clip_id for c in kept] == ['FreeSound/555']
    assert report.excluded == Counter({'overlaps Clotho evaluation': 2}) and report.kept == 1
    assert 'excluded 2' in str(report)


def test_generic_folder_reader(tmp_path):
    stand_in_audio(tmp_path, ['door_slam.wav', 'rain.wav'])
    (tmp_path / 'rain.txt').write_text('Rain falls.\nHeavy rain on a roof.\n')
    with pytest.raises(FileNotFoundError, match='door_slam.txt'):
        read_folder(tmp_path)
    report = LoadReport()
    assert [c.captions for c in read_folder(tmp_path, on_error='skip', report=report)] == [['Rain falls.', 'Heavy rain on a roof.']]
    assert report.skipped == Counter({'missing caption file': 1})
    assert [c.captions for c in read_folder(tmp_path, captions='name')] == [['door slam'], ['rain']]


# ---------------------------------------------------------------- DCASE 2025 multi-positive file

def test_multi_positive_file_parses_lists_and_names_bad_rows(tmp_path):
    path = tmp_path / 'dcase2025_eval.csv'
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['query', 'audio_filenames'])
        w.writerow(['A dog barks twice.', "['dog 1.wav', 'dog 2.wav', 'dog 3.wav']"])
        w.writerow(['Rain on a tin roof.', "['rain.wav']"])
        w.writerow(['Wind.', "['wind.wav'"])
        w.writerow(['Thunder.', "'thunder.wav'"])
        w.writerow(['', "['x.wav']"])
    with pytest.raises(ValueError, match='dcase2025_eval.csv line 4: audio_filenames is not a Python list'):
        read_multi_positive(path)
    report = LoadReport()
    queries = read_multi_positive(path, on_error='skip', report=report)
    assert [(q.query, q.audio_filenames) for q in queries] == [
        ('A dog barks twice.', ['dog 1.wav', 'dog 2.wav', 'dog 3.wav']), ('Rain on a tin roof.', ['rain.wav'])]
    assert report.skipped == Counter({'unparsable list': 1, 'bad list': 1, 'empty query': 1})
    relevant = relevance_matrix(queries, ['rain.wav', 'dog 2.wav', 'dog 1.wav', 'other.wav', 'dog 3.wav'])
    assert relevant.int().tolist() == [[0, 1, 1, 0, 1], [1, 0, 0, 0, 0]]
    (tmp_path / 'bad.csv').write_text('query,files\nx,"[]"\n')
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['audio_filenames'\]"):
        read_multi_positive(tmp_path / 'bad.csv')


# ---------------------------------------------------------------- downloads

class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture
def local_server(tmp_path):
    "Serves tmp_path/srv on 127.0.0.1 (no outside network)."
    root = tmp_path / 'srv'
    root.mkdir()
    server = ThreadingHTTPServer(('127.0.0.1', 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield root, f'http://127.0.0.1:{server.server_port}'
    server.shutdown(); server.server_close()


def fake_clotho_release(srv, split='evaluation', archive='zip'):
    "Stand-in Clotho files for one split (captions, metadata, audio archive) and their md5 sums."
    names = ['Santa Motor.wav', 'Radio Garble.wav']
    write_clotho_csv(srv / f'clotho_captions_{split}.csv', [[n] + [f'{n} caption {i}' for i in range(1, 6)] for n in names])
    (srv / f'clotho_metadata_{split}.csv').write_text('file_name,keywords,sound_id\n' +
                                                      ''.join(f'{n},k,{100 + i}\n' for i, n in enumerate(names)))
    stand_in_audio(srv / 'staging' / split, names)
    if archive == 'zip':
        with zipfile.ZipFile(srv / f'clotho_audio_{split}.zip', 'w') as z:
            for n in names: z.write(srv / 'staging' / split / n, f'{split}/{n}')
    else:
        py7zr = pytest.importorskip('py7zr')
        with py7zr.SevenZipFile(srv / f'clotho_audio_{split}.7z', 'w') as z:
            for n in names: z.write(srv / 'staging' / split / n, f'{split}/{n}')
    return {p.name: md5sum(p) for p in srv.iterdir() if p.is_file()}


def test_download_clotho_from_a_local_server_then_read_it(tmp_path, local_server):
    srv, url = local_server
    md5s = fake_clotho_release(srv)
    root = download_clotho(tmp_path / 'clotho', ('evaluation',), base_url=url, files=md5s, progress=False)
    clips = read_clotho(root, 'evaluation')
    assert [c.clip_id for c in clips] == ['Santa Motor.wav', 'Radio Garble.wav']
    assert [c.meta['freesound_id'] for c in clips] == ['100', '101']
    assert load_audio(clips[0].path, 32000).shape == (3200,)


def test_wrong_md5_fails_clearly_and_leaves_nothing(tmp_path, local_server):
    srv, url = local_server
    md5s = fake_clotho_release(srv)
    md5s['clotho_audio_evaluation.zip'] = '0123456789abcdef0123456789abcdef'
    with pytest.raises(ValueError, match=r'md5 mismatch for http://127.0.0.1:\d+/clotho_audio_evaluation.zip: '
                                         r'expected 0123456789abcdef0123456789abcdef, got [0-9a-f]{32}'):
        download_clotho(tmp_path / 'clotho', ('evaluation',), base_url=url, files=md5s, progress=False)
    left = sorted(p.name for p in (tmp_path / 'clotho').iterdir())
    assert 'clotho_audio_evaluation.zip' not in left and not any(n.endswith('.part') for n in left)


def test_download_skips_files_that_are_already_there_and_reads_file_urls(tmp_path):
    src = tmp_path / 'src.csv'
    src.write_text('file_name,caption\na.wav,x\n')
    dest = download_file(src.as_uri(), tmp_path / 'out' / 'a.csv', md5sum(src), progress=False)
    assert dest.read_text() == src.read_text()
    src.unlink()  # a second call must not need the source
    assert download_file(src.as_uri(), dest, md5sum(dest), progress=False) == dest
    with pytest.raises(ConnectionError, match='src.csv'):
        download_file(src.as_uri(), tmp_path / 'out' / 'b.csv', progress=False)


def test_download_clotho_unpacks_7z_archives(tmp_path, local_server):
    srv, url = local_server
    md5s = fake_clotho_release(srv, archive='7z')
    root = download_clotho(tmp_path / 'clotho', ('evaluation',), base_url=url, files=md5s, progress=False)
    assert sorted(p.name for p in (root / 'evaluation').iterdir()) == ['Radio Garble.wav', 'Santa Motor.wav']


def test_7z_without_an_extractor_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / 'a.7z').write_bytes(b'7z\xbc\xaf\x27\x1c')
    monkeypatch.setitem(sys.modules, 'py7zr', None)
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    with pytest.raises(RuntimeError, match='needs py7zr .* or the 7z program'):
        extract_archive(tmp_path / 'a.7z', tmp_path / 'out')
