"Bad files give an error naming the file and line (or a counted skip), never a garbled read, a silent drop or a write outside the destination."
import errno
import io
import json
import logging
import os
import stat
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import laretrieval.audio as audio_module
from laretrieval.audio import AudioCache, load_audio
from laretrieval.augment import read_caption_table
from laretrieval.corpora import (LoadReport, prepare_audio, read_audiocaps, read_caption_csv, read_clotho, read_csv_rows,
                                 read_esc50, read_folder, read_wavcaps)
from laretrieval.datasets import Clip
from laretrieval.download import extract_archive


def wav(path, seconds=0.1, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32), sr)
    return path


# ---------------------------------------------------------------- finding 2: CSV encodings

# line 2 is valid UTF-8 with a non-ASCII caption; line 3 holds one cp1252 byte (a right quote, 0x92)
UTF8_WITH_ONE_BAD_BYTE = 'file_name,caption\na.wav,café noise\n'.encode() + b'b.wav,a dog\x92s bark\n'


def test_utf8_csv_with_one_bad_byte_is_an_error_naming_file_line_and_offset(tmp_path):
    wav(tmp_path / 'a.wav'); wav(tmp_path / 'b.wav')
    (tmp_path / 'c.csv').write_bytes(UTF8_WITH_ONE_BAD_BYTE)
    offset = UTF8_WITH_ONE_BAD_BYTE.index(b'\x92')
    with pytest.raises(ValueError, match=rf"c.csv is not valid UTF-8: line 3, byte offset {offset} .*re-save it as UTF-8"):
        read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train')
    with pytest.raises(ValueError, match=r"c.csv is not valid UTF-8: line 3"):  # skip mode too: a whole file is not a row
        read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train', on_error='skip')


def test_an_explicit_encoding_reads_a_cp1252_csv_right(tmp_path):
    wav(tmp_path / 'a.wav')
    (tmp_path / 'c.csv').write_bytes('file_name,caption\na.wav,a dog’s bark in a café\n'.encode('cp1252'))
    clips = read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train', encoding='cp1252')
    assert clips[0].captions == ['a dog’s bark in a café']  # not 'a dog\x92s bark' as Latin-1 gives
    with pytest.raises(ValueError, match='unknown encoding'):
        read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train', encoding='no-such-codec')


def test_utf8_with_a_bom_still_reads(tmp_path):
    wav(tmp_path / 'a.wav')
    (tmp_path / 'c.csv').write_bytes('\ufefffile_name,caption\na.wav,café\n'.encode())
    assert read_caption_csv(tmp_path / 'c.csv', tmp_path, 'train')[0].captions == ['café']


def clotho_root(d, data:bytes):
    wav(d / 'evaluation' / 'a.wav')
    (d / 'clotho_captions_evaluation.csv').write_bytes(data)
    return d


def audiocaps_root(d, data:bytes):
    wav(d / 'test' / 'a.wav')
    (d / 'test.csv').write_bytes(data)
    return d


CLOTHO_CP1252 = ('file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n'
                 'a.wav,dog’s bark,café,b,c,d\n').encode('cp1252')


@pytest.mark.parametrize('read', [
    lambda d, **kw: [c.captions for c in read_clotho(clotho_root(d, CLOTHO_CP1252), 'evaluation', **kw)],
    lambda d, **kw: [c.captions for c in read_audiocaps(audiocaps_root(d, CLOTHO_CP1252), 'test', **kw)],
    lambda d, **kw: list(read_caption_table(clotho_root(d, CLOTHO_CP1252) / 'clotho_captions_evaluation.csv', **kw).values()),
], ids=['read_clotho', 'read_audiocaps', 'read_caption_table'])
def test_every_caption_reader_refuses_non_utf8_and_takes_an_encoding(tmp_path, read):
    with pytest.raises(ValueError, match=r'is not valid UTF-8: line 2, byte offset \d+'):
        read(tmp_path)
    assert read(tmp_path, encoding='cp1252') == [['dog’s bark', 'café', 'b', 'c', 'd']]


def test_clotho_metadata_is_read_as_latin1_as_published(tmp_path):
    root = clotho_root(tmp_path, ('file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n'
                                  'a.wav,1,2,3,4,5\n').encode())
    (root / 'clotho_metadata_evaluation.csv').write_bytes('file_name,keywords,sound_id\na.wav,café,42\n'.encode('latin-1'))
    assert read_clotho(root, 'evaluation')[0].meta['freesound_id'] == '42'
    with pytest.raises(ValueError, match='clotho_metadata_evaluation.csv is not valid UTF-8: line 2'):
        read_clotho(root, 'evaluation', metadata_encoding=None)


# ---------------------------------------------------------------- finding 8: a full disk under the audio cache

def test_a_cache_write_failure_does_not_stop_loading(tmp_path, monkeypatch, caplog):
    clips = [Clip(n, ['x'], 'train', path=wav(tmp_path / n)) for n in ('a.wav', 'b.wav', 'c.wav')]
    calls = []
    def full_disk(f, array, *args, **kwargs):
        calls.append(1); f.write(b'\x93NUMPY partial')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(audio_module.np, 'save', full_disk)
    cache, report = AudioCache(tmp_path / 'cache'), LoadReport()
    with caplog.at_level(logging.WARNING, logger='laretrieval'):
        kept = prepare_audio(clips, 16000, cache, on_error='skip', report=report, progress=False)
        wave = load_audio(clips[0].path, 16000, cache)
    assert [c.clip_id for c in kept] == ['a.wav', 'b.wav', 'c.wav'] and report.skipped == Counter()
    assert wave.shape == (1600,)
    assert [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()] == []  # the partial entry is gone
    assert len(calls) == 1  # writing stopped after the first failure
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(tmp_path / 'cache') in warnings[0] and 'ENOSPC' in warnings[0]
    assert cache.get(clips[0].path, 16000) is None  # reading is still on (nothing was stored)


def test_a_cache_under_an_unwritable_folder_still_loads(tmp_path, caplog):
    wav(tmp_path / 'a.wav')
    (tmp_path / 'blocked').write_text('a file where the cache folder should be')
    cache = AudioCache(tmp_path / 'blocked' / 'audio')
    with caplog.at_level(logging.WARNING, logger='laretrieval'):
        assert load_audio(tmp_path / 'a.wav', 16000, cache).shape == (1600,)
        load_audio(tmp_path / 'a.wav', 16000, cache)
    assert len([r for r in caplog.records if 'blocked' in r.getMessage()]) == 1


def test_an_empty_cache_entry_is_rebuilt(tmp_path, caplog):
    wav(tmp_path / 'a.wav')
    cache = AudioCache(tmp_path / 'cache')
    entry = cache.entry(tmp_path / 'a.wav', 16000)
    entry.parent.mkdir(parents=True); entry.write_bytes(b'')  # e.g. left by a full disk before atomic writes
    with caplog.at_level(logging.WARNING, logger='laretrieval'):
        assert load_audio(tmp_path / 'a.wav', 16000, cache).shape == (1600,)
    assert str(entry) in caplog.text and np.load(entry).shape == (1600,)


def test_prepare_audio_decodes_a_shared_file_once_and_counts_each_clip(tmp_path, monkeypatch):
    wav(tmp_path / 'a.wav'); (tmp_path / 'junk.wav').write_bytes(b'not audio')
    clips = [Clip(f'{n}#{k}', ['x'], 'train', path=tmp_path / n) for n in ('a.wav', 'junk.wav', 'gone.wav') for k in (1, 2)]
    decoded = []
    real = audio_module.decode_audio
    monkeypatch.setattr(audio_module, 'decode_audio', lambda p: decoded.append(Path(p).name) or real(p))
    report = LoadReport()
    kept = prepare_audio(clips, 16000, on_error='skip', report=report, progress=False)
    assert [c.clip_id for c in kept] == ['a.wav#1', 'a.wav#2']
    assert sorted(decoded) == ['a.wav', 'junk.wav']
    assert report.skipped == Counter({'undecodable audio': 2, 'missing audio': 2}) and report.kept == 2


# ---------------------------------------------------------------- finding 10: archives and file names outside their folder

def tar_with(path, members):
    "A tar file with (TarInfo, bytes or None) members."
    with tarfile.open(path, 'w') as t:
        for info, data in members:
            if data is not None: info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name); info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize('members, bad', [
    ([(tarfile.TarInfo('ok.wav'), b'RIFF'), (tarfile.TarInfo('../escaped.wav'), b'RIFF')], '../escaped.wav'),
    ([(tarfile.TarInfo('sub/../../escaped.wav'), b'RIFF')], 'sub/../../escaped.wav'),
    ([(tarfile.TarInfo('TMP/escaped.wav'), b'RIFF')], 'TMP/escaped.wav'),  # TMP: the absolute tmp_path
    ([link('out', '..'), (tarfile.TarInfo('out/escaped.wav'), b'RIFF')], 'out'),
    ([link('etc', '/etc')], 'etc'),
    ([link('hard', '../escaped.wav', tarfile.LNKTYPE)], 'hard'),
], ids=['dotdot', 'nested-dotdot', 'absolute', 'symlink-out', 'absolute-symlink', 'hardlink-out'])
def test_tar_members_outside_the_destination_are_refused(tmp_path, members, bad):
    for info, _ in members: info.name = info.name.replace('TMP', str(tmp_path))
    archive = tar_with(tmp_path / 'a.tar', members)
    with pytest.raises(ValueError, match=rf"a.tar: member '{bad.replace('TMP', str(tmp_path))}'.* outside"):
        extract_archive(archive, tmp_path / 'out')
    assert not (tmp_path / 'escaped.wav').exists()
    assert list((tmp_path / 'out').rglob('*')) == []  # checked before anything is written


def test_zip_members_outside_the_destination_are_refused_not_dropped(tmp_path):
    with zipfile.ZipFile(tmp_path / 'a.zip', 'w') as z:
        z.writestr('evaluation/ok.wav', b'RIFF'); z.writestr('../escaped.wav', b'RIFF')
    with pytest.raises(ValueError, match=r"a.zip: member '../escaped.wav'.* outside"):
        extract_archive(tmp_path / 'a.zip', tmp_path / 'out')
    assert list((tmp_path / 'out').rglob('*')) == []


def test_7z_members_outside_the_destination_are_refused(tmp_path, monkeypatch):
    class Fake7z:  # py7zr will not write such names, so a stand-in lists them
        Bad7zFile = type('Bad7zFile', (Exception,), {})
        def __init__(self, path): pass
        def __enter__(self): return self
        def __exit__(self, *a): pass
        def getnames(self): return ['evaluation/ok.wav', '../escaped.wav']
        def extractall(self, dest): raise AssertionError('unpacked without checking the names')
    Fake7z.SevenZipFile, Fake7z.exceptions = Fake7z, type('exceptions', (), {'ArchiveError': Fake7z.Bad7zFile})
    monkeypatch.setitem(sys.modules, 'py7zr', Fake7z)
    (tmp_path / 'a.7z').write_bytes(b'7z')
    with pytest.raises(ValueError, match=r"a.7z: member '../escaped.wav'.* outside"):
        extract_archive(tmp_path / 'a.7z', tmp_path / 'out')


def test_7z_program_listing_is_checked_before_unpacking(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'py7zr', None)
    bin_dir = tmp_path / 'bin'; bin_dir.mkdir()
    fake = bin_dir / '7z'  # prints bin/listing for 'l', records each call
    fake.write_text('#!/bin/sh\necho "$1" >> "$(dirname "$0")/calls"\n'
                    'if [ "$1" = l ]; then cat "$(dirname "$0")/listing"; fi\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / 'a.7z').write_bytes(b'7z')
    head = f'Listing archive: {tmp_path / "a.7z"}\n\n--\nPath = {tmp_path / "a.7z"}\nType = 7z\n\n----------\n'
    member = 'Path = {}\nSize = 4\nAttributes = A_ {}\n\n'
    (bin_dir / 'listing').write_text(head + member.format('evaluation/ok.wav', '-rw-r--r--') + member.format('../escaped.wav', '-rw-r--r--'))
    with pytest.raises(ValueError, match=r"a.7z: member '../escaped.wav'.* outside"):
        extract_archive(tmp_path / 'a.7z', tmp_path / 'out')
    (bin_dir / 'listing').write_text(head + member.format('evaluation/link.wav', 'lrwxrwxrwx'))
    with pytest.raises(ValueError, match=r"a.7z: member 'evaluation/link.wav' is a link"):
        extract_archive(tmp_path / 'a.7z', tmp_path / 'out')
    assert (bin_dir / 'calls').read_text().split() == ['l', 'l']  # never ran 'x'
    (bin_dir / 'listing').write_text(head + member.format('evaluation/ Rain, 1.wav', '-rw-r--r--'))
    extract_archive(tmp_path / 'a.7z', tmp_path / 'out')
    assert (bin_dir / 'calls').read_text().split() == ['l', 'l', 'l', 'x']


def test_safe_archives_still_unpack(tmp_path):
    archive = tar_with(tmp_path / 'a.tar', [(tarfile.TarInfo('evaluation/ Rain, 1.wav'), b'RIFF'),
                                            link('evaluation/alias.wav', ' Rain, 1.wav')])
    out = extract_archive(archive, tmp_path / 'out')
    assert (out / 'evaluation' / 'alias.wav').read_bytes() == b'RIFF'


def test_a_corrupt_archive_names_the_archive(tmp_path):
    (tmp_path / 'a.zip').write_bytes(b'not a zip')
    with pytest.raises(ValueError, match='cannot unpack .*a.zip'):
        extract_archive(tmp_path / 'a.zip', tmp_path / 'out')


def test_caption_csv_file_names_outside_the_audio_folder_are_bad_input(tmp_path):
    audio = tmp_path / 'audio'
    wav(audio / ' Rain, 1.wav'); wav(tmp_path / 'secret.wav')  # the '..' target exists: only the check stops it
    (tmp_path / 'c.csv').write_text(f'file_name,caption\n" Rain, 1.wav",rain\n../secret.wav,x\n{tmp_path / "secret.wav"},y\n')
    with pytest.raises(ValueError, match=r"c.csv line 3: file name '../secret.wav' is outside"):
        read_caption_csv(tmp_path / 'c.csv', audio, 'test')
    with pytest.raises(ValueError, match=r"c.csv line 3: file name '../secret.wav' is outside"):
        read_caption_csv(tmp_path / 'c.csv', audio, 'test', check_files=False)
    report = LoadReport()
    clips = read_caption_csv(tmp_path / 'c.csv', audio, 'test', on_error='skip', report=report)
    assert [c.clip_id for c in clips] == [' Rain, 1.wav']
    assert report.skipped == Counter({'file name outside the audio folder': 2})


def test_esc50_and_wavcaps_names_outside_the_audio_folder_are_bad_input(tmp_path):
    wav(tmp_path / 'audio' / '1-1-A-0.wav'); wav(tmp_path / 'secret.wav')
    (tmp_path / 'metadata.csv').write_text('filename,fold,target,category\n1-1-A-0.wav,1,0,dog\n../secret.wav,1,0,dog\n')
    with pytest.raises(ValueError, match=r"metadata.csv line 3: file name '../secret.wav' is outside"):
        read_esc50(tmp_path)
    (tmp_path / 'fsd_final.json').write_text(json.dumps({'data': [{'id': '../secret', 'caption': 'x'}]}))
    wav(tmp_path / 'fsd' / 'ok.flac')
    sf.write(tmp_path / 'secret.flac', np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match=r"fsd_final.json item 0: file name '../secret.flac' is outside"):
        read_wavcaps(tmp_path / 'fsd_final.json', tmp_path / 'fsd')


# ---------------------------------------------------------------- finding 13: a non-UTF-8 caption sidecar

def test_non_utf8_sidecar_names_the_file_or_is_counted(tmp_path):
    wav(tmp_path / 'a.wav'); wav(tmp_path / 'b.wav')
    (tmp_path / 'a.txt').write_bytes('A dog barks.\nIn a café.\n'.encode('latin-1'))
    (tmp_path / 'b.txt').write_text('Rain.\n')
    with pytest.raises(ValueError, match=r'a.txt is not valid UTF-8: line 2, byte offset 21'):
        read_folder(tmp_path)
    report = LoadReport()
    assert [c.clip_id for c in read_folder(tmp_path, on_error='skip', report=report)] == ['b.wav']
    assert report.skipped == Counter({'unreadable caption file': 1}) and 'a.txt' in report.examples['unreadable caption file'][0]
    assert read_folder(tmp_path, encoding='latin-1')[0].captions == ['A dog barks.', 'In a café.']


# ---------------------------------------------------------------- other bad files that gave a traceback without their path

def test_an_unclosed_quote_does_not_swallow_the_rest_of_the_csv(tmp_path):
    (tmp_path / 'c.csv').write_text('file_name,caption\na.wav,rain\nb.wav,"a dog\nc.wav,wind\nd.wav,sea\n')
    with pytest.raises(ValueError, match=r'c.csv line 3: a quoted field is never closed'):
        read_csv_rows(tmp_path / 'c.csv', LoadReport())
    (tmp_path / 'ok.csv').write_text('file_name,caption\na.wav,"two\nlines"\nb.wav,12" record\n\n\n')
    assert [r['caption'] for _, r in read_csv_rows(tmp_path / 'ok.csv', LoadReport())[1]] == ['two\nlines', '12" record']


def test_a_csv_parser_error_names_the_file_and_line(tmp_path):
    (tmp_path / 'c.csv').write_text('file_name,caption\na.wav,rain\nb.wav,' + 'x' * 200_000 + '\n')
    with pytest.raises(ValueError, match=r'c.csv line 3: field larger than field limit'):
        read_csv_rows(tmp_path / 'c.csv', LoadReport())


def test_esc50_fold_that_is_not_a_number_names_the_line(tmp_path):
    wav(tmp_path / 'audio' / 'a.wav'); wav(tmp_path / 'audio' / 'b.wav')
    (tmp_path / 'metadata.csv').write_text('filename,fold,target,category\na.wav,1,0,dog\nb.wav,one,0,dog\n')
    with pytest.raises(ValueError, match=r"metadata.csv line 3: fold 'one' or target '0' is not a whole number"):
        read_esc50(tmp_path)
    report = LoadReport()
    assert [c.clip_id for c in read_esc50(tmp_path, on_error='skip', report=report)] == ['a.wav']
    assert report.skipped == Counter({'bad fold or target': 1})


def test_clotho_freesound_ids_read_the_latin1_metadata_as_published(tmp_path):
    "Clotho's metadata files are ISO-8859-1 (a keyword like 'café' is one byte 0xE9): the leakage exclusion must read them."
    from laretrieval.protocol import clotho_freesound_ids
    path = tmp_path / 'clotho_metadata_evaluation.csv'
    path.write_bytes('file_name,keywords,sound_id\na.wav,café;rain,1234\nb.wav,wind,99\n'.encode('latin-1'))
    assert clotho_freesound_ids([path]) == {'1234', '99'}
