"Corpus mixtures and their readers: official AudioCaps CSVs, FSD50K with a caption file, LAION-Audio-630K's tar shards read in place, Clotho's held-out sounds excluded, the `dataset` mixture syntax, and a mixture run on stand-in folders."
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import torch

import laretrieval.audio as audio_module
from laretrieval.audio import ArchiveMember, AudioCache, load_audio, resample
from laretrieval.config import ExperimentConfig, load_settings
from laretrieval.corpora import LoadReport, prepare_audio
from laretrieval.datasets import AudioCaptionDataset
from laretrieval.mixtures import (MixtureCorpus, clotho_held_out_ids, exclude_held_out, read_audiocaps_any, read_fsd50k,
                                  read_laion_shards, repeat_by_weight)
from laretrieval.registry import CORPORA
from laretrieval.sources import corpus_for
from tiny import tiny_config


def write_wav(path:Path, seconds=0.3, sr=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype('float32'), sr)


def write_csv(path:Path, lines:list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')


# --- AudioCaps, official layout ---------------------------------------------------------------------------------------

OFFICIAL_VAL = ['audiocap_id,youtube_id,start_time,caption',
                *[f'{k},7fmOlUlwoNg,30,caption {k} of the machine' for k in range(5)],  # lines 2-6: one segment, 5 captions
                '10,6BJ455B1aAs,0.5,a rocket flies by',  # line 7: a fractional start time
                '11,too-short,0,x',                      # line 8: not a YouTube id
                '12,6BJ455B1aAs,soon,y',                 # line 9: start time not a number
                '13,6BJ455B1aAs,-3,y',                   # line 10: negative start time
                '14,6BJ455B1aAs,0.5,',                   # line 11: empty caption
                '15,AAAAAAAAAAA,20,its audio is missing',  # line 12: no audio file
                '16,AAAAAAAAAAA,20,still missing']          # line 13: same segment: counted once


def test_official_audiocaps_layout_groups_segments_and_counts_bad_rows(tmp_path):
    write_csv(tmp_path / 'val.csv', OFFICIAL_VAL)
    write_wav(tmp_path / 'val' / '7fmOlUlwoNg_30.wav'); write_wav(tmp_path / 'val' / '6BJ455B1aAs.wav')  # second pattern: '{youtube_id}.wav'
    report = LoadReport()
    clips = read_audiocaps_any(tmp_path, 'val', on_error='skip', report=report)
    assert [(c.clip_id, c.captions, c.path.name, c.split) for c in clips] == [
        ('7fmOlUlwoNg_30', [f'caption {k} of the machine' for k in range(5)], '7fmOlUlwoNg_30.wav', 'val'),
        ('6BJ455B1aAs_0.5', ['a rocket flies by'], '6BJ455B1aAs.wav', 'val')]
    assert clips[0].meta['audiocap_ids'] == ['0', '1', '2', '3', '4'] and clips[1].meta['start_time'] == 0.5
    assert report.skipped == Counter({'bad start_time': 2, 'bad youtube_id': 1, 'empty caption': 1, 'missing audio': 1})
    assert report.kept == 2
    with pytest.raises(ValueError, match="val.csv line 8: youtube_id 'too-short'"): read_audiocaps_any(tmp_path, 'val')


def test_audiocaps_corpus_still_reads_the_wavcaps_layout(tmp_path):
    for split in ('train', 'val', 'test'):
        write_csv(tmp_path / f'{split}.csv', ['file_name,caption', f'Y{split}.wav,a {split} sound'])
        write_wav(tmp_path / split / f'Y{split}.wav')
    corpus = CORPORA.get('audiocaps')()
    clips = corpus.clips(ExperimentConfig(dataset='audiocaps', data_dir=str(tmp_path)), load_settings())
    assert [(c.clip_id, c.split, c.captions) for c in clips] == [(f'Y{s}.wav', s, [f'a {s} sound']) for s in ('train', 'val', 'test')]
    assert corpus.notes == ['audiocaps: kept 3 clips']


def test_official_layout_with_a_missing_column_is_named(tmp_path):
    write_csv(tmp_path / 'train.csv', ['audiocap_id,youtube_id,caption', '1,7fmOlUlwoNg,x'])
    with pytest.raises(ValueError, match=r"train.csv: not AudioCaps' official layout .*missing \['start_time'\]"):
        read_audiocaps_any(tmp_path, 'train')


# --- LAION-Audio-630K webdataset shards ---------------------------------------------------------------------------------

def audio_bytes(seed, sr=48000, seconds=0.25, fmt='FLAC'):
    wave = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype('float32')
    buf = io.BytesIO(); sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


def write_shard(path:Path, members:list[tuple[str, bytes]]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, 'w') as tar:
        for name, data in members:
            info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))


def test_laion_shard_is_read_in_place_and_a_broken_item_counted(tmp_path, monkeypatch):
    good = audio_bytes(0)
    write_shard(tmp_path / 'freesound' / 'train' / '000.tar', [
        ('a/1.flac', good), ('a/1.json', json.dumps({'text': ['a door creaks', 'a creaky door'], 'original_data': {'id': 555}}).encode()),
        ('a/2.flac', b'\x00garbage'), ('a/2.json', b'{"text": "static"}'),          # broken audio
        ('a/3.wav', audio_bytes(1, fmt='WAV')), ('a/3.json', b'{"text": "birds sing"}')])
    write_shard(tmp_path / 'freesound' / 'test' / '000.tar', [('b/9.flac', good), ('b/9.json', b'{"text": "a test clip"}')])
    def no_unpacking(*args, **kwargs): raise AssertionError('a shard was unpacked')
    monkeypatch.setattr(tarfile.TarFile, 'extractall', no_unpacking)
    monkeypatch.setattr(tarfile.TarFile, 'extract', no_unpacking)
    decoded = []
    real_decode = audio_module.decode_audio
    monkeypatch.setattr(audio_module, 'decode_audio', lambda path: decoded.append(str(path)) or real_decode(path))
    report = LoadReport()
    listed = read_laion_shards(tmp_path, on_error='skip', report=report)
    assert decoded == []  # listing reads no audio
    assert [(c.clip_id, c.split, c.captions, c.meta.get('freesound_id'), c.waveform) for c in listed] == [
        ('freesound/test/000/b/9', 'test', ['a test clip'], None, None),  # shards in path order
        ('freesound/train/000/a/1', 'train', ['a door creaks', 'a creaky door'], '555', None),
        ('freesound/train/000/a/2', 'train', ['static'], None, None),
        ('freesound/train/000/a/3', 'train', ['birds sing'], None, None)]
    assert all(isinstance(c.path, ArchiveMember) for c in listed)
    clips = prepare_audio(listed, 16000, on_error='skip', report=report, progress=False, workers=1)
    assert [c.clip_id for c in clips] == ['freesound/test/000/b/9', 'freesound/train/000/a/1', 'freesound/train/000/a/3']
    reference, sr = sf.read(io.BytesIO(good), dtype='float32')
    np.testing.assert_array_equal(load_audio(clips[1].path, 16000), resample(reference, sr, 16000))
    assert report.skipped == Counter({'undecodable audio': 1}) and report.kept == 3
    assert sorted(p.name for p in tmp_path.rglob('*') if p.is_file()) == ['000.tar', '000.tar']  # nothing written beside the shards
    with pytest.raises(ValueError, match="000.tar::a/2.flac cannot be decoded"): prepare_audio(listed, 16000, progress=False, workers=1)


def test_laion_training_items_come_from_the_shard_through_the_cache(tmp_path):
    write_shard(tmp_path / 's.tar', [('1.flac', audio_bytes(0, seconds=1.0)), ('1.json', b'{"text": "a hum"}')])
    clips = read_laion_shards(tmp_path)
    cache = AudioCache(tmp_path / 'cache')
    dataset = AudioCaptionDataset(clips, 16000, 10.0, cache=cache)
    first, again = dataset[0]['audio'], dataset[0]['audio']
    assert first.shape == (16000,) and torch.equal(first, again) and (cache.hits, cache.misses) == (1, 1)


def test_a_compressed_shard_is_skipped_with_its_reason(tmp_path):
    with tarfile.open(tmp_path / 'z.tar', 'w:gz') as tar:
        data = audio_bytes(0); info = tarfile.TarInfo('1.flac'); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    report = LoadReport()
    assert read_laion_shards(tmp_path, on_error='skip', report=report) == []
    assert report.skipped == Counter({'compressed shard': 1})
    with pytest.raises(ValueError, match='z.tar: a compressed shard cannot be read in place; decompress it'): read_laion_shards(tmp_path)


def test_laion_incomplete_pair_and_bad_json_are_counted(tmp_path):
    write_shard(tmp_path / 's.tar', [('1.flac', audio_bytes(0)), ('2.flac', audio_bytes(1)), ('2.json', b'{not json'),
                                     ('3.json', b'{"text": "only text"}')])
    report = LoadReport()
    assert read_laion_shards(tmp_path, on_error='skip', report=report) == []
    assert report.skipped == Counter({'incomplete sample': 2, 'bad json': 1})


# --- FSD50K with a caption file --------------------------------------------------------------------------------------

def make_fsd50k(root:Path):
    write_csv(root / 'FSD50K.ground_truth' / 'dev.csv', ['fname,labels,mids,split', '101,Dog_bark,/m/1,train', '102,Rain,/m/2,val',
                                                         '103,Bell,/m/3,train', 'x9,Rain,/m/2,train', '104,Rain,/m/2,extra'])
    write_csv(root / 'FSD50K.ground_truth' / 'eval.csv', ['fname,labels,mids', '201,"Engine,Vehicle","/m/4,/m/5"'])
    write_csv(root / 'captions.csv', ['fname,caption', '101,a dog barks twice', '101,a dog is barking', '102,rain on a roof',
                                      '104,rain', '201,an engine idles', '999,no such clip'])
    for name in ('101', '102', '103', '104'): write_wav(root / 'FSD50K.dev_audio' / f'{name}.wav')
    write_wav(root / 'FSD50K.eval_audio' / '201.wav')


def test_fsd50k_reads_splits_and_captions_from_the_caption_file(tmp_path):
    make_fsd50k(tmp_path)
    report = LoadReport()
    clips = read_fsd50k(tmp_path, tmp_path / 'captions.csv', on_error='skip', report=report)
    assert [(c.clip_id, c.split, c.captions, c.meta['freesound_id']) for c in clips] == [
        ('101', 'train', ['a dog barks twice', 'a dog is barking'], '101'), ('102', 'val', ['rain on a roof'], '102'),
        ('201', 'test', ['an engine idles'], '201')]
    assert clips[2].meta['labels'] == ['engine', 'vehicle']
    assert report.skipped == Counter({'no caption in the caption file': 1, 'bad fname': 1, 'bad split': 1})
    assert report.notes == ['2 fname(s) of captions.csv are no FSD50K clip read']  # 999 (no such clip) and 104 (its row was skipped)
    templated = read_fsd50k(tmp_path, tmp_path / 'captions.csv', label_template='the sound of {}', on_error='skip')
    assert [c.captions for c in templated if c.clip_id == '103'] == [['the sound of bell']]


# --- Clotho's held-out sounds ------------------------------------------------------------------------------------------

def test_exclusion_counts_against_clotho_evaluation_and_test_lists(tmp_path):
    write_csv(tmp_path / 'clotho_metadata_evaluation.csv', ['file_name,keywords,sound_id', 'a.wav,k,101', 'b.wav,k,555', 'c.wav,k,'])
    write_csv(tmp_path / 'clotho_metadata_test.csv', ['file_name,keywords,sound_id', 't.wav,k,201'])
    held_out = clotho_held_out_ids(tmp_path)
    assert held_out == {'evaluation': {'101', '555'}, 'test': {'201'}}
    make_fsd50k(tmp_path / 'fsd')
    clips = read_fsd50k(tmp_path / 'fsd', tmp_path / 'fsd' / 'captions.csv', label_template='{}', on_error='skip')
    report = LoadReport()
    kept = exclude_held_out(clips, held_out, report)
    expected = {c.clip_id for c in clips} - {'101', '201'}  # the naive way: the ids in neither list
    assert {c.clip_id for c in kept} == expected
    assert report.excluded == Counter({'in Clotho evaluation': 1, 'in Clotho test': 1})
    assert clotho_held_out_ids(tmp_path / 'nowhere') == {}


# --- the mixture syntax and weights -------------------------------------------------------------------------------------

def test_config_accepts_mixtures_of_registered_corpora_only():
    assert ExperimentConfig(dataset='audiocaps:2+wavcaps+clotho').dataset == 'audiocaps:2+wavcaps+clotho'
    assert CORPORA.mixture('audiocaps:2+wavcaps:0.25+clotho') == [('audiocaps', 2.0), ('wavcaps', 0.25), ('clotho', 1.0)]
    for bad, message in [('audiocaps+clotoh', "unknown member 'clotoh'"), ('audiocaps:0+clotho', "weight '0' of 'audiocaps' must be a positive"),
                         ('audiocaps:two+clotho', "weight 'two'"), ('audiocaps:inf+clotho', "weight 'inf'"),
                         ('clotho+clotho', "'clotho' is named twice"), ('clotho:2', 'a mixture joins two or more'),
                         ('audiocaps++clotho', "unknown member ''")]:
        with pytest.raises(ValueError, match=f"parameter 'dataset': .*{message}"): ExperimentConfig(dataset=bad)
    with pytest.raises(ValueError, match="unknown dataset 'audioset'"): ExperimentConfig(dataset='audioset')  # plain names: as before


def test_repeat_by_weight_keeps_whole_copies_and_draws_the_fraction():
    clips = list(range(8))
    mixed = repeat_by_weight(clips, 2.25, np.random.default_rng(0))
    counts = Counter(mixed)
    assert len(mixed) == 18 and sorted(counts.values()) == [2] * 6 + [3] * 2
    assert mixed == repeat_by_weight(clips, 2.25, np.random.default_rng(0))  # data_seed fixes the draw
    assert len(repeat_by_weight(clips, 0.5, np.random.default_rng(0))) == 4 and repeat_by_weight([], 3, np.random.default_rng(0)) == []


def test_mixture_evaluates_on_clotho_when_it_is_a_member():
    mixed = corpus_for(ExperimentConfig(dataset='wavcaps+clotho+audiocaps'))
    assert isinstance(mixed, MixtureCorpus) and mixed.eval_member == 'clotho' and mixed.normalized_captions
    assert corpus_for(ExperimentConfig(dataset='wavcaps+audiocaps')).eval_member == 'audiocaps'


def test_cli_overrides_name_a_mixture():
    from laretrieval.cli import parse_overrides
    assert ExperimentConfig(**parse_overrides(['dataset=audiocaps:2+wavcaps+clotho'])).dataset == 'audiocaps:2+wavcaps+clotho'
    with pytest.raises(ValueError, match="weight 'x' of 'audiocaps'"): ExperimentConfig(**parse_overrides(['dataset=audiocaps:x+clotho']))


def test_mixture_without_clotho_metadata_says_nothing_was_excluded(tmp_path):
    make_fsd50k(tmp_path / 'fsd50k')
    for split in ('train', 'val', 'test'):
        write_csv(tmp_path / 'audiocaps' / f'{split}.csv', ['file_name,caption', f'Y{split}.wav,a {split} sound'])
        write_wav(tmp_path / 'audiocaps' / split / f'Y{split}.wav')
    cfg = ExperimentConfig(dataset='fsd50k:2+audiocaps', data_dir=str(tmp_path), sample_rate=16000)
    mixture = corpus_for(cfg)
    clips = mixture.clips(cfg, load_settings())
    assert mixture.eval_member == 'audiocaps' and not mixture.normalized_captions
    assert [(c.clip_id, c.split) for c in clips] == [('fsd50k/101', 'train')] * 2 + [('Yval.wav', 'val'), ('Ytest.wav', 'test'), ('Ytrain.wav', 'train')]
    assert "(Clotho's held-out sounds are NOT excluded)" in mixture.notes[0]
    assert 'fsd50k: 1 training clips x 2 = 2; excluded 0 in Clotho evaluation/test, 2 val/test clips unused' in mixture.notes


def test_laion_corpus_lists_its_shards(tmp_path):
    write_shard(tmp_path / 'laion630k' / '0.tar', [('1.flac', audio_bytes(0)), ('1.json', b'{"text": "a hum"}')])
    corpus = CORPORA.get('laion630k')()
    clips = corpus.clips(ExperimentConfig(dataset='laion630k', data_dir=str(tmp_path / 'laion630k'), sample_rate=16000), load_settings())
    assert [(c.clip_id, str(c.path)) for c in clips] == [('0/1', f"{tmp_path / 'laion630k' / '0.tar'}::1.flac")]
    assert load_audio(clips[0].path, 16000).shape == (4000,)
    assert corpus.notes == ['laion630k: kept 1 clips']


# --- the must-show: a mixture run on stand-in AudioCaps (official), WavCaps and Clotho folders ----------------------

CLOTHO_EVAL_IDS, CLOTHO_TEST_IDS = ['9001', '9002'], ['9003']


def make_standin_folders(root:Path):
    "AudioCaps (official CSVs), WavCaps (FreeSound json + flac) and Clotho (captions, metadata, audio) folders of a few clips each."
    rng = np.random.default_rng(0)
    words = ['dog', 'rain', 'engine', 'bell', 'bird', 'door', 'water', 'wind', 'crowd', 'train', 'horn', 'drum']
    def caption(k): return f'a {words[k % 12]} and a {words[(k * 5 + 1) % 12]} number {k}'
    ac = root / 'audiocaps'
    ids = [f'{chr(65 + k) * 10}{k}' for k in range(6)]  # 11-character YouTube-like ids
    write_csv(ac / 'train.csv', ['audiocap_id,youtube_id,start_time,caption', *[f'{k},{y},30,{caption(k)}' for k, y in enumerate(ids)],
                                 '99,not-an-id,0,a bad row'])
    for y in ids[:5]: write_wav(ac / 'train' / f'{y}_30.wav', seed=int(rng.integers(1000)))  # ids[5]: its YouTube video is gone
    for split in ('val', 'test'):
        write_csv(ac / f'{split}.csv', ['audiocap_id,youtube_id,start_time,caption', f'50,ZZZZZZZZZZ{split[0]},0,an {split} segment'])
        write_wav(ac / split / f'ZZZZZZZZZZ{split[0]}_0.wav')
    wc = root / 'wavcaps'
    freesound = ['9001', '9002', '9003', '7001', '7002', '7003']  # three are Clotho evaluation/test sounds
    (wc / 'json').mkdir(parents=True)
    (wc / 'json' / 'fsd_final.json').write_text(json.dumps({'data': [{'id': f, 'caption': caption(20 + k)} for k, f in enumerate(freesound)]}))
    for f in freesound:
        (wc / 'FreeSound').mkdir(parents=True, exist_ok=True)
        sf.write(wc / 'FreeSound' / f'{f}.flac', 0.1 * rng.standard_normal(4800).astype('float32'), 16000)
    cl = root / 'clotho'
    header = 'file_name,caption_1,caption_2,caption_3,caption_4,caption_5'
    for split, n, first in (('development', 10, 40), ('validation', 4, 60), ('evaluation', 4, 70)):
        names = [f'{split}_{k}.wav' for k in range(n)]
        write_csv(cl / f'clotho_captions_{split}.csv', [header] + [','.join([name] + [caption(first + k) + f' take {j}' for j in range(5)])
                                                              for k, name in enumerate(names)])
        for name in names: write_wav(cl / split / name, seed=int(rng.integers(1000)))
    write_csv(cl / 'clotho_metadata_evaluation.csv', ['file_name,keywords,sound_id'] + [f'evaluation_{k}.wav,k,{i}' for k, i in enumerate(CLOTHO_EVAL_IDS)])
    write_csv(cl / 'clotho_metadata_test.csv', ['file_name,keywords,sound_id'] + [f'test_{k}.wav,k,{i}' for k, i in enumerate(CLOTHO_TEST_IDS)])


@pytest.mark.slow
def test_mixture_run_reads_standin_folders_and_prints_the_exclusion_counts(tmp_path, capsys):
    from laretrieval.build import build_datasets
    from laretrieval.pipeline import run_training
    make_standin_folders(tmp_path / 'data')
    cfg = tiny_config(dataset='audiocaps:2+wavcaps+clotho', data_dir=str(tmp_path / 'data'), sample_rate=16000)
    splits = build_datasets(cfg)
    train_clips = getattr(splits.train, 'base', splits.train).clips  # under an AugmentDataset: the dataset it wraps
    train_ids = Counter(c.clip_id for c in train_clips)
    # AudioCaps: 5 segments with audio, twice each; WavCaps: 6 - 3 held out; Clotho: its 10 development clips
    assert sum(v for k, v in train_ids.items() if k.startswith('audiocaps/')) == 10
    assert sorted(k for k in train_ids if k.startswith('wavcaps/')) == ['wavcaps/FreeSound/7001', 'wavcaps/FreeSound/7002', 'wavcaps/FreeSound/7003']
    assert sum(k.startswith('development_') for k in train_ids) == 10 and len(train_clips) == 23
    assert [len(splits.val.clips), len(splits.test.clips)] == [4, 4] and all(c.clip_id.startswith('evaluation_') for c in splits.test.clips)
    metrics = run_training(cfg, tmp_path / 'run', progress=False)
    printed = capsys.readouterr().out
    print(printed)  # the must-show, in the test log with -s
    assert "wavcaps: 3 training clips x 1 = 3; excluded 2 in Clotho evaluation; 1 in Clotho test" in printed
    assert "audiocaps: 5 training clips x 2 = 10; excluded 0 in Clotho evaluation/test, 2 val/test clips unused" in printed
    audiocaps_note = next(l for l in printed.splitlines() if l.startswith('audiocaps: kept'))
    assert audiocaps_note.startswith('audiocaps: kept 7 clips, skipped 2: ') and '1 missing audio' in audiocaps_note and '1 bad youtube_id' in audiocaps_note
    assert "Clotho evaluation (2 Freesound ids), Clotho test (1 Freesound ids)" in printed
    assert 'clips: train 23, val 4, test 4' in printed
    assert any('excluded 2 in Clotho evaluation; 1 in Clotho test' in n for n in metrics['data_notes'])
    assert metrics['n_test_clips'] == 4


def test_mixture_of_real_caption_subsets(shared_data, tmp_path):
    "Subsets of the real AudioCaps (WavCaps layout) and Clotho caption files, with stand-in audio: the mixture reads them as their own readers do."
    import csv
    from laretrieval.corpora import read_clotho
    root = tmp_path / 'data'
    for split, n in (('train', 6), ('val', 2), ('test', 2)):
        lines = (shared_data / 'audiocaps_captions' / f'{split}.csv').read_text(encoding='utf-8').splitlines()[:n + 1]
        write_csv(root / 'audiocaps' / f'{split}.csv', lines)
        for row in csv.DictReader(lines): write_wav(root / 'audiocaps' / split / row['file_name'])
    for split, n in (('development', 6), ('validation', 3), ('evaluation', 3)):
        lines = (shared_data / 'clotho_captions' / f'clotho_captions_{split}.csv').read_text(encoding='utf-8').splitlines()
        rows = list(csv.DictReader(lines))[:n]
        (root / 'clotho').mkdir(parents=True, exist_ok=True)
        with open(root / 'clotho' / f'clotho_captions_{split}.csv', 'w', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0])); writer.writeheader(); writer.writerows(rows)
        for row in rows: write_wav(root / 'clotho' / split / row['file_name'])
    cfg = ExperimentConfig(dataset='audiocaps+clotho', data_dir=str(root), sample_rate=16000)
    mixture = corpus_for(cfg)
    clips = mixture.clips(cfg, load_settings())
    clotho = [c for s in ('development', 'validation', 'evaluation') for c in read_clotho(root / 'clotho', s, normalize=True)]
    assert [(c.clip_id, c.split, c.captions) for c in clips if not c.clip_id.startswith('audiocaps/')] == \
           [(c.clip_id, c.split, c.captions) for c in clotho if c.split != 'train'] + [(c.clip_id, c.split, c.captions) for c in clotho if c.split == 'train']
    audiocaps_train = [c for c in clips if c.clip_id.startswith('audiocaps/')]
    assert len(audiocaps_train) == 6 and all(t == t.lower() for c in audiocaps_train for t in c.captions)  # normalised like Clotho's
    assert "NOT excluded" in mixture.notes[0]  # the shared data has no Clotho metadata (Freesound ids)
