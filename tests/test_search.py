"Using a trained model (laretrieval.search): windows and spans, the incremental index, search by text and example, FAISS = exact, zero-shot."
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F

from laretrieval import search
from laretrieval.config import ExperimentConfig
from laretrieval.model import AudioEmbedding
from laretrieval.search import (build_index, encode_audio_files, exact_searcher, faiss_searcher, read_index, read_labels,
                                search_index, search_vectors, top_files, zeroshot)
from tiny import tiny_config

SR = 16000
BUILTIN = ExperimentConfig(dataset='builtin')  # 4 s windows at 16 kHz


class StubModel(nn.Module):
    "A dual encoder whose answers are known: audio -> unit (1, mean level of the real samples); text 'level x' -> unit (1, x)."
    def __init__(self):
        super().__init__()
        self.audio_proj = types.SimpleNamespace(linear=types.SimpleNamespace(out_features=2))
        self.embed_dim = 2
        self.windows = 0  # windows embedded so far

    def encode_audio(self, waveforms, lengths):
        assert not self.training and not torch.is_grad_enabled()
        self.windows += len(waveforms)
        real = torch.arange(waveforms.shape[1])[None] < lengths[:, None]
        mean = (waveforms * real).sum(1) / lengths
        return AudioEmbedding(F.normalize(torch.stack([torch.ones_like(mean), mean], 1), dim=-1))

    def encode_text(self, captions):
        return F.normalize(torch.tensor([[1.0, float(c.split()[-1])] for c in captions]), dim=-1)


class ToneModel(StubModel):
    "Audio -> unit (energy below 1 kHz, energy above, 0); a text naming 'low' -> (1, 0, 0), 'high' -> (0, 1, 0), else (0, 0, 1)."
    def __init__(self):
        super().__init__()
        self.audio_proj.linear.out_features = self.embed_dim = 3

    def encode_audio(self, waveforms, lengths):
        spectrum = torch.fft.rfft(waveforms).abs() ** 2
        cut = int(1000 * waveforms.shape[1] / SR)
        parts = [spectrum[:, :cut].sum(1), spectrum[:, cut:].sum(1), torch.zeros(len(waveforms))]
        return AudioEmbedding(F.normalize(torch.stack(parts, 1), dim=-1))

    def encode_text(self, captions):
        return torch.tensor([[1.0, 0, 0] if 'low' in c else [0, 1.0, 0] if 'high' in c else [0, 0, 1.0] for c in captions])


def write_levels(path, levels, seconds_each):
    "A float WAV of constant levels, `seconds_each` seconds each."
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.repeat(np.array(levels, np.float32), int(seconds_each * SR)), SR, subtype='FLOAT')


def write_tone(path, freq, seconds=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, subtype='FLOAT' if path.suffix == '.wav' else None)


@pytest.fixture
def stub_models(monkeypatch):
    "Model paths named A and B load two stub models with different fingerprints; counts the files decoded."
    models = {'A': StubModel(), 'B': StubModel()}
    loaded = []
    monkeypatch.setattr(search, 'load_model_and_fingerprint', lambda path, device='cpu': (models[Path(path).name], BUILTIN, f'fingerprint-{Path(path).name}'))
    real_load = search.load_audio
    monkeypatch.setattr(search, 'load_audio', lambda path, sr, cache=None: loaded.append(Path(path).name) or real_load(path, sr, cache))
    return models, loaded


@pytest.fixture
def collection(tmp_path):
    "long.wav: 12 s at levels 0.1, 0.5, 0.9 (4 s each); a.wav 4 s at 0.45; sub/b.wav 2 s at 0.2; c.wav 4 s at -0.5; broken.wav."
    root = tmp_path / 'audio'
    write_levels(root / 'long.wav', [0.1, 0.5, 0.9], 4)
    write_levels(root / 'a.wav', [0.45], 4)
    write_levels(root / 'sub' / 'b.wav', [0.2], 2)
    write_levels(root / 'c.wav', [-0.5], 4)
    (root / 'broken.wav').write_bytes(b'RIFF not really audio')
    (root / 'notes.txt').write_text('not audio')
    return root


def test_encode_windows_of_a_long_and_a_short_file_and_counts_bad_files(collection, tmp_path):
    "An 11 s file: windows every 2 s plus one ending at 11 s; a 2 s file: one window; missing, empty and broken files named."
    write_levels(tmp_path / 'eleven.wav', [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], 1)  # level of second s
    sf.write(tmp_path / 'empty.wav', np.zeros(0, np.float32), SR)
    model = StubModel().train()
    paths = [tmp_path / 'eleven.wav', collection / 'sub' / 'b.wav', tmp_path / 'missing.wav', tmp_path / 'empty.wav', collection / 'broken.wav']
    vectors, spans, failures = encode_audio_files(model, paths, SR, 4.0, batch_size=3, progress=False)
    assert spans == [(0, 0.0, 4.0), (0, 2.0, 6.0), (0, 4.0, 8.0), (0, 6.0, 10.0), (0, 7.0, 11.0), (1, 0.0, 2.0)]
    assert model.training  # restored after eval-mode embedding
    assert vectors.dtype == np.float32 and vectors.shape == (6, 2)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    means = vectors[:, 1] / vectors[:, 0]  # the stub's (1, mean) direction: the window's mean level
    np.testing.assert_allclose(means, [0.5, 0.5, 0.5, 0.5, 0.5, 0.2], atol=1e-6)  # 7-11 s: levels 1, 0, 1, 0
    assert sorted(Path(p).name for p in failures) == ['broken.wav', 'empty.wav', 'missing.wav']
    assert 'zero samples' in failures[str(tmp_path / 'empty.wav')] and 'not found' in failures[str(tmp_path / 'missing.wav')]
    with pytest.raises(ValueError, match='broken.wav'):
        encode_audio_files(model, [collection / 'broken.wav'], SR, 4.0, progress=False, on_error='raise')
    with pytest.raises(ValueError, match='hop_seconds must be in'):
        encode_audio_files(model, paths, SR, 4.0, hop_seconds=0, progress=False)
    empty, no_spans, _ = encode_audio_files(model, [tmp_path / 'missing.wav'], SR, 4.0, progress=False)
    assert empty.shape == (0, 2) and no_spans == []


def test_index_updates_only_what_changed_and_refuses_another_model(stub_models, collection, tmp_path):
    models, loaded = stub_models
    index_dir = tmp_path / 'index'
    first = build_index(collection, tmp_path / 'A', index_dir, progress=False)
    assert sorted(loaded) == ['a.wav', 'b.wav', 'broken.wav', 'c.wav', 'long.wav']
    assert (first.added, first.files, first.windows, list(first.skipped)) == (['a.wav', 'c.wav', 'long.wav', 'sub/b.wav'], 4, 8, ['broken.wav'])
    index = read_index(index_dir)
    assert [f['path'] for f in index.files] == ['a.wav', 'c.wav', 'long.wav', 'sub/b.wav']
    assert index.files[2]['windows'] == [[0.0, 4.0], [2.0, 6.0], [4.0, 8.0], [6.0, 10.0], [8.0, 12.0]]
    assert sorted(p.name for p in index_dir.iterdir()) == ['manifest.json', index.manifest['vectors']]  # no pickle, no leftovers

    loaded.clear(); windows_before = models['A'].windows
    again = build_index(collection, tmp_path / 'A', index_dir, progress=False)
    assert loaded == [] and models['A'].windows == windows_before  # nothing decoded, nothing embedded (broken.wav not retried)
    assert (again.added, again.updated, again.removed, again.unchanged, list(again.skipped)) == ([], [], [], 4, ['broken.wav'])

    (collection / 'sub' / 'b.wav').unlink()
    stat = (collection / 'a.wav').stat()
    write_levels(collection / 'a.wav', [0.95], 4)  # same size, other content
    os.utime(collection / 'a.wav', ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    write_levels(collection / 'd.wav', [0.3], 6)
    changed = build_index(collection, tmp_path / 'A', index_dir, progress=False)
    assert sorted(loaded) == ['a.wav', 'd.wav']
    assert models['A'].windows == windows_before + 3  # a.wav: 1 window, d.wav (6 s): 0-4 and 2-6
    assert (changed.added, changed.updated, changed.removed, changed.unchanged) == (['d.wav'], ['a.wav'], ['sub/b.wav'], 2)
    after = read_index(index_dir)
    rows = {f['path']: f['row'] for f in after.files}
    np.testing.assert_allclose(after.vectors[rows['a.wav'], 1] / after.vectors[rows['a.wav'], 0], 0.95, atol=1e-6)
    np.testing.assert_array_equal(after.vectors[rows['long.wav']:rows['long.wav'] + 5], index.vectors[index.files[2]['row']:index.files[2]['row'] + 5])
    assert len(list(index_dir.glob('vectors-*.npy'))) == 1

    with pytest.raises(ValueError, match=r'built with model .*A \(fingerprint fingerprint-A\), not with .*B \(fingerprint fingerprint-B\)'):
        build_index(collection, tmp_path / 'B', index_dir, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(hop_seconds 2\.0 there, 1\.0 now\)"):
        build_index(collection, tmp_path / 'A', index_dir, hop_seconds=1.0, progress=False)
    rebuilt = build_index(collection, tmp_path / 'B', index_dir, progress=False, overwrite=True)
    assert rebuilt.added == ['a.wav', 'c.wav', 'd.wav', 'long.wav']
    assert read_index(index_dir).manifest['model']['fingerprint'] == 'fingerprint-B'


def test_a_failed_write_leaves_the_old_index(stub_models, collection, tmp_path, monkeypatch):
    build_index(collection, tmp_path / 'A', tmp_path / 'index', progress=False)
    before = read_index(tmp_path / 'index')
    write_levels(collection / 'new.wav', [0.3], 4)
    def disk_full(*args, **kwargs): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(search.np, 'save', disk_full)
    with pytest.raises(OSError, match='No space left'):
        build_index(collection, tmp_path / 'A', tmp_path / 'index', progress=False)
    monkeypatch.undo()
    after = read_index(tmp_path / 'index')
    assert after.manifest == before.manifest
    assert sorted(p.name for p in (tmp_path / 'index').iterdir()) == ['manifest.json', before.manifest['vectors']]


def test_search_by_text_and_by_example_returns_distinct_files_with_their_best_span(stub_models, collection, tmp_path):
    build_index(collection, tmp_path / 'A', tmp_path / 'index', progress=False)
    hits = search_index(tmp_path / 'index', 'level 0.5', k=3)
    assert [(h['rank'], h['path'], h['start_s'], h['end_s']) for h in hits] == [(1, 'long.wav', 4.0, 8.0), (2, 'a.wav', 0.0, 4.0), (3, 'sub/b.wav', 0.0, 2.0)]
    assert hits[0]['score'] == pytest.approx(1.0, abs=1e-6)
    assert hits[0]['file'] == str((collection / 'long.wav').resolve())
    assert [h['path'] for h in search_index(tmp_path / 'index', 'level 0.9', k=10)] == ['long.wav', 'a.wav', 'sub/b.wav', 'c.wav']  # all 4 files, once each
    write_levels(tmp_path / 'example.wav', [0.8, 1.0], 2)  # mean level 0.9
    by_example = search_index(tmp_path / 'index', audio=tmp_path / 'example.wav', k=2)
    assert [(h['path'], h['start_s'], h['end_s']) for h in by_example] == [('long.wav', 8.0, 12.0), ('a.wav', 0.0, 4.0)]
    assert by_example[0]['score'] == pytest.approx(1.0, abs=1e-6)
    for bad, message in (('', 'empty query'), ('   ', 'empty query'), (None, 'exactly one of')):
        with pytest.raises(ValueError, match=message): search_index(tmp_path / 'index', bad, k=3)
    with pytest.raises(ValueError, match='exactly one of'): search_index(tmp_path / 'index', 'level 0.5', audio=tmp_path / 'example.wav')
    with pytest.raises(FileNotFoundError, match='missing.wav'): search_index(tmp_path / 'index', audio=tmp_path / 'missing.wav')
    with pytest.raises(ValueError, match='is not the model index'): search_index(tmp_path / 'index', 'level 0.5', model=tmp_path / 'B')
    with pytest.raises(FileNotFoundError, match='no index in'): search_index(tmp_path / 'nowhere', 'level 0.5')


def unit(x): return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_faiss_equals_exact_search_on_random_vectors():
    "Clustered random unit vectors: FAISS's flat index returns the exact top 10 (recall@10 = 1), windows and files."
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    vectors = unit(centres[rng.integers(0, 50, 20000)] + rng.normal(size=(20000, 64)))
    queries = unit(centres[rng.integers(0, 50, 200)] + rng.normal(size=(200, 64)))
    (s_exact, r_exact), (s_faiss, r_faiss) = exact_searcher(vectors)(queries, 10), faiss_searcher(vectors)(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(r_exact, r_faiss)])
    assert recall == 1.0
    np.testing.assert_allclose(s_faiss, s_exact, atol=1e-5)
    files = np.sort(rng.integers(0, 4000, 20000))  # about 5 windows per file
    files = np.unique(files, return_inverse=True)[1]
    exact, with_faiss = top_files(vectors, files, queries, 10), top_files(vectors, files, queries, 10, exact_below=0)
    assert [[f for f, _, _ in q] for q in exact] == [[f for f, _, _ in q] for q in with_faiss]
    assert all(len({f for f, _, _ in q}) == 10 for q in exact)
    brute = pd.DataFrame(queries @ vectors.T).T.groupby(files).max()  # per file its best window, per query
    assert [[f for f, _, _ in q] for q in exact[:20]] == [brute[i].sort_values(ascending=False, kind='stable').index[:10].tolist() for i in range(20)]


def test_missing_faiss_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'faiss', None)
    vectors = unit(np.random.default_rng(0).normal(size=(100, 8)))
    with pytest.raises(ImportError, match=r'pip install "laretrieval\[search\]"'):
        top_files(vectors, np.arange(100), vectors[:1], 5, exact_below=50)
    assert len(top_files(vectors, np.arange(100), vectors[:1], 5, exact_below=1000)[0]) == 5  # exact search needs no FAISS


@pytest.fixture
def tone_model(monkeypatch):
    model = ToneModel()
    monkeypatch.setattr(search, 'load_model_and_fingerprint', lambda path, device='cpu': (model, BUILTIN, 'fingerprint-tone'))
    return model


def test_zeroshot_on_an_esc50_layout_with_known_answers(tone_model, tmp_path):
    "Low and high tones labelled low/high, one high tone labelled low, one listed file missing: the answers are determined."
    root = tmp_path / 'esc'
    files = [('1-low-a.wav', 200, 'low'), ('1-low-b.wav', 300, 'low'), ('2-low-c.wav', 250, 'low'),
             ('1-high-a.wav', 3000, 'high'), ('2-high-b.wav', 4000, 'high'), ('2-odd.wav', 3500, 'low')]
    for name, freq, _ in files: write_tone(root / 'audio' / name, freq)
    rows = [(name, name[0], 0, label) for name, _, label in files] + [('2-gone.wav', 2, 0, 'high')]
    (root / 'meta').mkdir()
    pd.DataFrame(rows, columns=['filename', 'fold', 'target', 'category']).to_csv(root / 'meta' / 'esc50.csv', index=False)
    result = zeroshot('A', root, progress=False, output_dir=tmp_path / 'out')
    assert result.accuracy == pytest.approx(5 / 6) and result.chance == 0.5
    assert result.confusion.values.tolist() == [[2, 0], [1, 3]] and list(result.confusion.index) == ['high', 'low']
    table = result.per_class.set_index('class')
    assert table.loc['high', ['files', 'correct', 'predicted']].tolist() == [2, 2, 3]
    assert table.recall.tolist() == pytest.approx([1.0, 0.75]) and table.precision.tolist() == pytest.approx([2 / 3, 1.0])
    assert result.predictions.set_index('file').loc['2-odd.wav', 'predicted'] == 'high'
    assert list(result.skipped) == ['2-gone.wav'] and 'not found' in result.skipped['2-gone.wav']
    assert result.prompts == {'high': 'the sound of high', 'low': 'the sound of low'}
    saved = json.loads((tmp_path / 'out' / 'zeroshot.json').read_text())
    assert (saved['accuracy'], saved['files'], list(saved['skipped'])) == (pytest.approx(5 / 6), 6, ['2-gone.wav'])
    assert pd.read_csv(tmp_path / 'out' / 'confusion.csv', index_col=0).values.tolist() == [[2, 0], [1, 3]]
    assert (tmp_path / 'out' / 'confusion.png').stat().st_size > 0
    fold2 = zeroshot('A', root, folds=[2], progress=False)
    assert len(fold2.predictions) == 3 and fold2.accuracy == pytest.approx(2 / 3)


def test_zeroshot_reads_urbansound8k_and_generic_csvs(tone_model, tmp_path):
    root = tmp_path / 'UrbanSound8K'
    write_tone(root / 'audio' / 'fold1' / '1-0-0-0.wav', 200); write_tone(root / 'audio' / 'fold3' / '3-0-0-0.wav', 3000)
    (root / 'metadata').mkdir()
    (root / 'metadata' / 'UrbanSound8K.csv').write_text('slice_file_name,fsID,start,end,salience,fold,classID,class\n'
                                                        '1-0-0-0.wav,1,0,1,1,1,0,low_hum\n3-0-0-0.wav,3,0,1,1,3,1,high_whine\n')
    result = zeroshot('A', root, progress=False)
    assert result.accuracy == 1.0 and result.predictions.file.tolist() == ['fold1/1-0-0-0.wav', 'fold3/3-0-0-0.wav']
    assert result.prompts['low_hum'] == 'the sound of low hum'
    flat = tmp_path / 'flat'
    write_tone(flat / 'x.flac', 3000); write_tone(flat / 'y.flac', 200)
    (tmp_path / 'labels.csv').write_text('clip,kind\nx.flac,high\ny.flac,low\n')
    generic = zeroshot('A', flat, tmp_path / 'labels.csv', template='a {} sound', file_column='clip', label_column='kind', progress=False)
    assert generic.accuracy == 1.0 and generic.prompts == {'high': 'a high sound', 'low': 'a low sound'}
    with pytest.raises(ValueError, match='labels.csv: no file column'):
        read_labels(flat, tmp_path / 'labels.csv')
    with pytest.raises(FileNotFoundError, match='no labels file in'):
        read_labels(flat)
    (tmp_path / 'outside.csv').write_text('file,label\n../secret.wav,low\n')
    with pytest.raises(ValueError, match="outside.csv line 2: file '../secret.wav' is outside"):
        read_labels(flat, tmp_path / 'outside.csv')


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "A one-epoch run on the built-in set and its test clips written as 4 s files."
    from laretrieval.pipeline import build_datasets, run_training
    root = tmp_path_factory.mktemp('tiny')
    cfg = tiny_config()
    run_training(cfg, root / 'run', progress=False)
    clips = build_datasets(cfg).test.clips
    (root / 'audio').mkdir()
    for c in clips: sf.write(root / 'audio' / f'{c.clip_id}.wav', c.waveform, c.sample_rate, subtype='FLOAT')
    return root, clips


@pytest.mark.slow  # tiny_run trains
def test_a_real_run_indexes_and_searches_with_its_own_model(tiny_run, tmp_path):
    "The index records the run; search_index reloads it from there; the same file found by example has cosine 1."
    root, clips = tiny_run
    summary = build_index(root / 'audio', root / 'run', tmp_path / 'index', progress=False)
    assert (summary.files, summary.windows) == (len(clips), len(clips))
    hits = search_index(tmp_path / 'index', audio=root / 'audio' / f'{clips[0].clip_id}.wav', k=2)
    assert hits[0]['path'] == f'{clips[0].clip_id}.wav' and hits[0]['score'] == pytest.approx(1.0, abs=1e-4)
    assert len(search_index(tmp_path / 'index', clips[0].captions[0], k=len(clips) + 3)) == len(clips)


@pytest.mark.slow  # tiny_run trains
def test_index_and_search_commands(tiny_run, tmp_path, capsys):
    "`laretrieval index` then `laretrieval search --json` / `--audio`: the same hits as the Python API; an empty query exits 2."
    from laretrieval.cli import main
    root, clips = tiny_run
    assert main(['index', str(root / 'audio'), '--model', str(root / 'run'), '--output', str(tmp_path / 'index')]) == 0
    capsys.readouterr()
    assert main(['search', str(tmp_path / 'index'), clips[1].captions[0], '-k', '3', '--json']) == 0
    hits = json.loads(capsys.readouterr().out)
    expected = search_index(tmp_path / 'index', clips[1].captions[0], k=3)
    assert [h['path'] for h in hits] == [h['path'] for h in expected] and [h['rank'] for h in hits] == [1, 2, 3]
    assert main(['search', str(tmp_path / 'index', ), '--audio', str(root / 'audio' / f'{clips[0].clip_id}.wav'), '-k', '1']) == 0
    assert f'{clips[0].clip_id}.wav' in capsys.readouterr().out
    assert main(['search', str(tmp_path / 'index'), '  ']) == 2


@pytest.mark.slow  # tiny_run trains
def test_fingerprint_is_the_hub_fingerprint(tiny_run):
    "The index identifies its model by laretrieval.hub's fingerprint: a run and its exported model folder are the same model."
    from laretrieval.hub import model_fingerprint
    run = tiny_run[0] / 'run'
    assert search.load_model_and_fingerprint(run)[2] == model_fingerprint(run)


@pytest.mark.slow
def test_esc50_fold4_zeroshot_equals_the_runs_a2t_r1_and_search_beats_chance(shared_data, tmp_path):
    "A 3-epoch ESC-50 run: zero-shot accuracy on fold 4 is its audio->text R@1; precision@8 of the 50 captions is far above 8/400."
    from laretrieval.model import embed_texts
    from laretrieval.pipeline import load_run, run_training
    esc50 = shared_data / 'esc50'
    cfg = ExperimentConfig(dataset='esc50', data_dir=str(esc50), positives='caption', text_trainable_layers=0, epochs=3, embed_dim=128, seed=0, num_threads=1)
    metrics = run_training(cfg, tmp_path / 'run', progress=False)
    model, cfg = load_run(tmp_path / 'run')
    result = zeroshot((model, cfg), esc50, folds=[4], progress=False)
    assert len(result.predictions) == 400 and result.chance == 1 / 50
    assert result.accuracy == pytest.approx(metrics['test']['a2t']['R@1'], abs=2 / 400)
    meta = pd.read_csv(esc50 / 'metadata.csv'); fold4 = meta[meta.fold == 4]
    (tmp_path / 'fold4').mkdir()
    for name in fold4.filename: (tmp_path / 'fold4' / name).symlink_to(esc50 / 'audio' / name)
    assert build_index(tmp_path / 'fold4', tmp_path / 'run', tmp_path / 'index', progress=False).windows == 400
    captions = sorted(fold4.caption.unique())
    ranked = search_vectors(read_index(tmp_path / 'index'), embed_texts(model, captions).numpy(), k=8)
    caption_of = dict(zip(fold4.filename, fold4.caption))
    p8 = np.mean([np.mean([caption_of[h['path']] == c for h in hits]) for c, hits in zip(captions, ranked)])
    assert p8 > 5 * 8 / 400, p8


def test_decoding_on_a_pool_keeps_order_errors_and_values(tmp_path):
    "Index building decodes on a process pool a few files ahead: the same waveforms, in order, and the same unusable files."
    from laretrieval.corpora import POOL_MIN_FILES
    from laretrieval.search import decoded_in_order
    rng = np.random.default_rng(0)
    paths = []
    for i in range(POOL_MIN_FILES + 6):
        path = tmp_path / f'clip{i:03d}.wav'
        if i % 25 == 7: path.write_bytes(b'not audio')  # unusable files among the good ones
        else: sf.write(path, rng.standard_normal(int(SR * (0.2 + 0.01 * i))).astype(np.float32) * 0.1, SR)
        paths.append(path)
    paths.append(tmp_path / 'missing.wav')
    serial = list(decoded_in_order(paths, SR, workers=1))
    pooled = list(decoded_in_order(paths, SR, workers=2, ahead=2))
    assert [p for p, _ in pooled] == paths
    for (_, a), (_, b) in zip(serial, pooled):
        if isinstance(a, Exception): assert type(a) is type(b) and str(a) == str(b)
        else: np.testing.assert_array_equal(a, b)
    assert sum(isinstance(w, Exception) for _, w in pooled) == 4
