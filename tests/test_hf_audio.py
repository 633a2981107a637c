"hf:<name> audio encoders (AST, CLAP audio, Whisper encoder, wav2vec 2, HuBERT) and clap:<name> dual encoders, on tiny random models saved with save_pretrained (no download)."
import subprocess, sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

from encoder_contract import check_frames, check_learns, check_mixup, check_pooling
from hf_tiny import save_tiny, tiny_model
from laretrieval import cli
from laretrieval.config import ExperimentConfig
from laretrieval.hf_audio import ClapAudioEncoder, ClapTextEncoder, HFAudioEncoder, clap_config, clap_model_folder, repeat_pad
from laretrieval.hub import load_model
from laretrieval.model import DualEncoder
from laretrieval.registry import AUDIO_ENCODERS, TEXT_ENCODERS
from tiny import offline_env, set_args, tiny, tiny_config

KINDS = ('ast', 'clap', 'whisper', 'wav2vec2', 'hubert')
RATE = dict(ast=16000, clap=48000, whisper=16000, wav2vec2=16000, hubert=16000)
PREFIX = dict(clap='audio_model.', whisper='encoder.')  # where the encoder's `net` sits in the saved model's keys

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def folders(tmp_path_factory)->dict:
    "kind -> a save_pretrained folder of a tiny random model with its feature extractor."
    root = tmp_path_factory.mktemp('hf')
    return {kind: save_tiny(kind, root / kind) for kind in KINDS}


def build(folder:Path, kind:str, **overrides)->HFAudioEncoder:
    cfg = tiny_config(**{'audio_encoder': f'hf:{folder}', 'sample_rate': RATE[kind], **overrides})
    return AUDIO_ENCODERS.get(cfg.audio_encoder).from_config(cfg, AUDIO_ENCODERS.split(cfg.audio_encoder)[1])


def test_registry_names():
    assert 'hf:MIT/ast-finetuned-audioset-10-10-0.4593' in AUDIO_ENCODERS and 'clap:laion/clap-htsat-unfused' in AUDIO_ENCODERS
    assert AUDIO_ENCODERS.get('hf:x') is HFAudioEncoder and AUDIO_ENCODERS.get('clap:x') is ClapAudioEncoder
    assert TEXT_ENCODERS.get('clap:x') is ClapTextEncoder and TEXT_ENCODERS.split('clap:x') == ('clap', 'x')
    ExperimentConfig(audio_encoder='hf:some/model')  # a valid config value


@pytest.mark.parametrize('kind', KINDS)
def test_built_from_config(folders, kind):
    enc = build(folders[kind], kind)
    assert isinstance(enc, HFAudioEncoder) and enc.sample_rate == RATE[kind]
    assert enc.family == {'wav2vec2': 'waveform', 'hubert': 'waveform'}.get(kind, kind)
    assert enc.out_dim == (64 if kind == 'clap' else 32)
    assert getattr(enc, 'projection', None) is None  # hf: CLAP is the audio tower alone


def test_wrong_rate_names_both(folders):
    with pytest.raises(ValueError, match=r"48000 Hz.*sample_rate=16000"):
        build(folders['clap'], 'clap', sample_rate=16000)


# real frames of the 1 / 10 / 30 s clip: 20 ms (wav2vec 2, HuBERT: the model's own conv formula; Whisper), AST one per
# 100 ms in 10.24 s windows, CLAP 32 per 10 s window
FRAMES = dict(wav2vec2={1: 49, 10: 499, 30: 1499}, hubert={1: 49, 10: 499, 30: 1499}, whisper={1: 50, 10: 500, 30: 1500},
              ast={1: 10, 10: 100, 30: 2 * 101 + 96}, clap={1: 4, 10: 32, 30: 96})


@pytest.mark.parametrize('kind', KINDS)
def test_frames(folders, kind):
    shapes = check_frames(build(folders[kind], kind))
    assert {s: real[0] for s, (t, real) in shapes.items()} == FRAMES[kind]
    if kind in ('whisper', 'clap', 'ast'):  # windowed: T is a whole number of windows
        per_window = dict(whisper=1500, clap=32, ast=101)[kind]
        assert all(t % per_window == 0 for t, _ in shapes.values())


@pytest.mark.parametrize('kind', KINDS)
def test_pooling(folders, kind):
    check_pooling(build(folders[kind], kind))


@torch.no_grad()
@pytest.mark.parametrize('kind', KINDS)
def test_same_as_the_extractor_and_model(folders, kind):
    "A clip within one window: the encoder's output equals the model run on its own feature extractor's features."
    enc = build(folders[kind], kind).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folders[kind])
    torch.manual_seed(1)
    n = int(2.5 * enc.sample_rate)
    wave = torch.randn(1, n) * 0.1
    out = enc(wave, torch.tensor([n]))
    inputs = extractor([wave[0].numpy()], sampling_rate=enc.sample_rate, return_tensors='pt')
    if kind == 'clap':
        ref = enc.net(inputs['input_features'])
        torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-4, rtol=1e-3)
        padded = repeat_pad(wave, torch.tensor([n]), enc.window)
        torch.testing.assert_close(enc.frontend(padded).transpose(1, 2), inputs['input_features'][:, 0], atol=2e-3, rtol=1e-4)
    elif kind == 'whisper':
        torch.testing.assert_close(enc.frontend(wave), inputs['input_features'], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.frames, enc.net(inputs['input_features']).last_hidden_state, atol=1e-4, rtol=1e-3)
    elif kind == 'ast':
        fbank = enc.frontend(wave).transpose(1, 2)[:, :int(enc.frontend.n_frames(torch.tensor(n)))]
        torch.testing.assert_close(fbank, inputs['input_values'][:, :fbank.shape[1]], atol=1e-4, rtol=1e-4)
        ref = enc.net(inputs['input_values'])
        torch.testing.assert_close(out.pooled, ref.pooler_output)
        rows, steps = enc.grid
        torch.testing.assert_close(out.frames[0, 3], ref.last_hidden_state[0, 2:].reshape(rows, steps, -1)[:, 3].mean(0))
    else:
        torch.testing.assert_close(out.frames, enc.net(inputs['input_values']).last_hidden_state, atol=1e-4, rtol=1e-3)


def randomized(kind:str, folder:Path, layers:int=2)->Path:
    "Another tiny `kind` model, every weight changed, saved into `folder`."
    model, _ = tiny_model(kind, layers)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize('kind', KINDS)
def test_weights_round_trip(folders, kind, tmp_path):
    "audio_weights: a save_pretrained folder lands strictly (every tensor of the file in place); '' the model's own; 'none' random."
    other = randomized(kind, tmp_path / 'other')
    enc = build(folders[kind], kind, audio_weights=str(other))
    saved, prefix = load_file(other / 'model.safetensors'), PREFIX.get(kind, '')
    state = enc.net.state_dict()
    compared = [k for k in state if prefix + k in saved]  # transformers 5 renames some keys on load (AST: layers.*)
    assert compared and any('embed' in k for k in compared)
    for k in compared: torch.testing.assert_close(state[k], saved[prefix + k], msg=k)
    reference = type(tiny_model(kind)[0]).from_pretrained(other)  # every tensor, through transformers' own loader
    reference = dict(clap=lambda m: m.audio_model, whisper=lambda m: m.encoder).get(kind, lambda m: m)(reference).state_dict()
    assert state.keys() == reference.keys()
    for k in state: torch.testing.assert_close(state[k], reference[k], msg=k)
    own, rand = build(folders[kind], kind), build(folders[kind], kind, audio_weights='none')
    original = load_file(folders[kind] / 'model.safetensors')
    key = compared[-1]
    torch.testing.assert_close(own.net.state_dict()[key], original[prefix + key])
    assert not torch.equal(rand.net.state_dict()[compared[0]], saved[prefix + compared[0]])


@pytest.mark.parametrize('kind', KINDS)
def test_missing_weights_are_an_error(folders, kind, tmp_path):
    "A checkpoint with one layer for a two-layer model: an error naming the folder and a missing key."
    if kind == 'clap': pytest.skip('the tiny CLAP audio tower has one block per stage; its text tower is checked below')
    short = randomized(kind, tmp_path / 'short', layers=1)
    with pytest.raises(ValueError, match=rf"{short}.*missing"):
        build(folders[kind], kind, audio_weights=str(short))
    with pytest.raises(FileNotFoundError, match='no such folder'):
        build(folders[kind], kind, audio_weights=str(tmp_path / 'nowhere'))


@pytest.mark.parametrize('kind', KINDS)
def test_audio_blocks_keeps_the_first_layers(folders, kind):
    enc = build(folders[kind], kind, audio_blocks=1)
    layers = dict(ast=lambda n: n.layers, whisper=lambda n: n.layers, clap=lambda n: n.audio_encoder.layers[0].blocks)
    assert len(layers.get(kind, lambda n: n.encoder.layers)(enc.net)) == 1
    check_frames(enc, seconds=(1,))


def test_unsupported_model_is_an_error(tmp_path):
    from transformers import BertConfig
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'bert' is not supported"):
        HFAudioEncoder(str(tmp_path))


# clap:<name> — CLAP as a dual encoder

def clap_cfg(folder, **overrides)->ExperimentConfig:
    return ExperimentConfig(**{**dict(audio_encoder=f'clap:{folder}', text_encoder=f'clap:{folder}', embed_dim=16, sample_rate=48000,
                                      text_trainable_layers=-1), **overrides})

CAPTIONS = ['a dog barks twice', 'rain falls on a tin roof while thunder rolls far away', 'a car passes']


def clips(rate:int=48000):
    torch.manual_seed(2)
    lengths = torch.tensor([10 * rate, 3 * rate, 30000])
    waves = torch.randn(3, int(lengths.max())) * 0.1
    waves[torch.arange(waves.shape[1])[None] >= lengths[:, None]] = 0
    return waves, lengths


@torch.no_grad()
def test_clap_scores_are_clap_models_cosines(folders):
    "DualEncoder scores == ClapModel's logits_per_text / exp(logit_scale_t): CLAP's towers, projections and normalisation."
    model = DualEncoder.from_config(clap_cfg(folders['clap'])).eval()
    assert type(model.audio_proj).__name__ == type(model.text_proj).__name__ == 'ClapProjectionLayer'
    waves, lengths = clips()
    scores = model.similarity(model.encode_text(CAPTIONS), model.encode_audio(waves, lengths))
    ref = ClapModel.from_pretrained(folders['clap']).eval()
    features = AutoFeatureExtractor.from_pretrained(folders['clap'])([w[:n].numpy() for w, n in zip(waves, lengths)],
                                                                     sampling_rate=48000, return_tensors='pt')
    tokens = AutoTokenizer.from_pretrained(folders['clap'])(CAPTIONS, padding=True, return_tensors='pt')
    out = ref(input_ids=tokens['input_ids'], attention_mask=tokens['attention_mask'], input_features=features['input_features'])
    torch.testing.assert_close(scores, out.logits_per_text / ref.logit_scale_t.exp(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.encode_text(CAPTIONS), out.text_embeds, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.text_encoder.logit_scale, ref.logit_scale_t.detach())
    assert model.text_encoder.temperature == pytest.approx(1 / ref.logit_scale_t.exp().item())


def test_clap_projections_train_with_the_heads(folders):
    model = DualEncoder.from_config(clap_cfg(folders['clap']))
    groups = {g['name']: {id(p) for p in g['params']} for g in model.param_groups(1e-5, 1e-5, 1e-3)}
    assert {id(p) for p in model.audio_proj.parameters()} <= groups['heads']
    assert {id(p) for p in model.text_proj.parameters()} <= groups['heads']
    assert not groups['audio'] & groups['heads'] and not groups['text'] & groups['heads']
    assert 'text_encoder.logit_scale' in model.state_dict() and not any('projection' in k for k in model.audio_encoder.state_dict())


def test_clap_config_contradictions_are_errors(folders):
    with pytest.raises(ValueError, match=rf"text_encoder must be 'clap:{folders['clap']}'"):
        DualEncoder.from_config(clap_cfg(folders['clap'], text_encoder='minilm'))
    with pytest.raises(ValueError, match='projection_dim is 16, but embed_dim=32; set embed_dim=16'):
        DualEncoder.from_config(clap_cfg(folders['clap'], embed_dim=32))
    with pytest.raises(ValueError, match='not CLAP'):
        ClapAudioEncoder.from_config(clap_cfg(folders['whisper'], sample_rate=16000), str(folders['whisper']))
    cfg = clap_config(str(folders['clap']))
    assert (cfg.audio_encoder, cfg.text_encoder, cfg.embed_dim, cfg.sample_rate) == (f"clap:{folders['clap']}",) * 2 + (16, 48000)


@torch.no_grad()
def test_zero_shot_folder_round_trip(folders, tmp_path):
    "clap_model_folder (and `laretrieval export clap:<name>`) writes a model folder that load_model reads with the same scores."
    folder = clap_model_folder(str(folders['clap']), tmp_path / 'zs')
    loaded, cfg = load_model(folder)
    direct = DualEncoder.from_config(clap_cfg(folders['clap'], max_text_tokens=77)).eval()
    assert cfg.embed_dim == 16 and cfg.tau == pytest.approx(direct.text_encoder.temperature, rel=1e-5)
    waves, lengths = clips()
    score = lambda m: m.similarity(m.encode_text(CAPTIONS), m.encode_audio(waves, lengths))
    torch.testing.assert_close(score(loaded), score(direct))
    assert cli.main(['export', f"clap:{folders['clap']}", str(tmp_path / 'cli')]) == 0
    torch.testing.assert_close(score(load_model(tmp_path / 'cli')[0]), score(direct))



@torch.no_grad()
@pytest.mark.parametrize('kind', ('clap', 'ast'))
def test_model_folder_needs_no_hub(folders, kind, tmp_path):
    "A model folder of an hf:/clap: model holds the audio config and feature extractor: it loads with the source gone."
    import shutil
    source = shutil.copytree(folders[kind], tmp_path / 'source')
    if kind == 'clap': out = clap_model_folder(str(source), tmp_path / 'model')
    else:
        cfg = tiny_config(audio_encoder=f'hf:{source}', sample_rate=RATE[kind])
        out = DualEncoder.from_config(cfg).save_pretrained(tmp_path / 'model', cfg)
    before = load_model(out)[0]
    assert sorted(p.name for p in (out / 'audio_encoder').iterdir()) == ['config.json', 'preprocessor_config.json']
    shutil.rmtree(source)  # what another machine lacks: the checkpoint the model was built from
    after = load_model(out)[0]
    waves, lengths = clips(RATE[kind])
    score = lambda m: m.similarity(m.encode_text(CAPTIONS), m.encode_audio(waves, lengths))
    torch.testing.assert_close(score(after), score(before))

def test_clap_text_checkpoint_missing_keys(folders, tmp_path):
    short = randomized('clap', tmp_path / 'short', layers=1)
    for name in ('config.json', 'preprocessor_config.json'): (short / name).write_text((folders['clap'] / name).read_text())
    AutoTokenizer.from_pretrained(folders['clap']).save_pretrained(short)
    (short / 'config.json').write_text((folders['clap'] / 'config.json').read_text())
    with pytest.raises(ValueError, match=r'missing text_model\.encoder\.layer\.1'):
        ClapTextEncoder(str(short))


# training (slow)

@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_learns(folders, kind, tmp_path):
    check_learns(tmp_path, audio_encoder=f'hf:{folders[kind]}', sample_rate=RATE[kind], audio_lr=3e-4)


@pytest.mark.slow
def test_clap_fine_tuning_lowers_the_loss(folders, tmp_path):
    check_learns(tmp_path, audio_encoder=f"clap:{folders['clap']}", text_encoder=f"clap:{folders['clap']}", embed_dim=16,
                 sample_rate=48000)


@pytest.mark.slow
def test_cli_train_end_to_end(folders, tmp_path):
    "`laretrieval train --set audio_encoder=hf:<folder> --set sample_rate=16000` on the tiny built-in set."
    params = tiny(audio_encoder=f"hf:{folders['wav2vec2']}", sample_rate=16000)
    proc = subprocess.run([str(Path(sys.executable).parent / 'laretrieval'), 'train', *set_args(params), '--output-dir',
                           str(tmp_path / 'run'), '--quiet'], capture_output=True, text=True, env=offline_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / 'run' / 'metrics.json').is_file() and 't2a' in proc.stdout + (tmp_path / 'run' / 'metrics.json').read_text()
    model, cfg = load_model(tmp_path / 'run')
    assert cfg.audio_encoder == f"hf:{folders['wav2vec2']}" and isinstance(model.audio_encoder, HFAudioEncoder)


@pytest.mark.parametrize('kind', ['ast', 'clap', 'whisper'])
def test_specaugment_wraps_the_log_mel(folders, kind):
    "specaug_p: SpecAugment after AST's / Whisper's / CLAP's torch log-mel, masks in training mode only; wav2vec 2 has none."
    from laretrieval.augment import AugmentConfig, SpecAugment
    enc = build(folders[kind], kind)
    enc.augment_frontend(lambda frontend: SpecAugment(frontend, AugmentConfig(specaug_p=1.0)))
    n = enc.sample_rate
    wave = torch.randn(1, n) * 0.1
    with torch.no_grad():
        plain = enc.eval()(wave, torch.tensor([n])).pooled
        torch.testing.assert_close(enc(wave, torch.tensor([n])).pooled, plain)
        assert not torch.allclose(enc.train()(wave, torch.tensor([n])).pooled, plain)
    with pytest.raises(ValueError, match='no spectrogram front end'):
        build(folders['wav2vec2'], 'wav2vec2').augment_frontend(lambda f: f)


@torch.no_grad()
def test_fused_clap_matches_its_extractor(tmp_path):
    "A fused CLAP (laion/clap-htsat-fused's layout): a clip within 10 s is 4 stacked copies of its mel, is_longer False, as the extractor makes it."
    from hf_tiny import clap_config
    from transformers import ClapFeatureExtractor
    config = clap_config(); config.audio_config.enable_fusion = True
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(tmp_path); ClapFeatureExtractor().save_pretrained(tmp_path)  # truncation 'fusion'
    enc = build(tmp_path, 'clap').eval()
    assert enc.fusion
    n = 4 * 48000
    wave = torch.randn(1, n) * 0.1
    inputs = AutoFeatureExtractor.from_pretrained(tmp_path)([wave[0].numpy()], sampling_rate=48000, return_tensors='pt')
    # the extractor flags one clip of an all-short batch as longer (LAION's training trick, so the fusion layers get
    # gradients); the encoder never does: a window within 10 s has nothing to fuse
    assert inputs['input_features'].shape[1] == 4 and inputs['is_longer'].all()
    ref = enc.net(inputs['input_features'], is_longer=torch.zeros_like(inputs['is_longer']))
    torch.testing.assert_close(enc(wave, torch.tensor([n])).pooled, ref.pooler_output, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize('kind', KINDS)
def test_mixup_mixes_spectrograms_or_says_it_cannot(folders, kind):
    encoder = build(folders[kind], kind)
    if encoder.frontend is None:  # wav2vec 2 / HuBERT read waveforms: nothing to mix on
        with pytest.raises(ValueError, match='no spectrogram front end'): check_mixup(encoder)
    else: check_mixup(encoder, seconds=12.0 if kind == 'ast' else 2.0)  # AST: two 10.24 s windows and one
