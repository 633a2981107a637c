"BEATs (laretrieval.beats): the Kaldi fbank against a NumPy reference, official-layout checkpoints loaded strictly, the encoder contract, a tiny run and the CLI."
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder_contract import check_frames, check_learns, check_mixup, check_pooling
from laretrieval.beats import BEATs, BEATsAudioEncoder, BEATsConfig, KaldiFbank
from laretrieval.config import ExperimentConfig
from laretrieval.registry import AUDIO_ENCODERS
from tiny import offline_env, set_args, tiny

torch.set_num_threads(1)

# the cfg stored in BEATs_iter3_plus_AS2M.pt (as printed from the file by its users), typed in independently of laretrieval.beats
ITER3_PLUS_CFG = {
    'encoder_layers': 12, 'encoder_embed_dim': 768, 'encoder_ffn_embed_dim': 3072, 'encoder_attention_heads': 12,
    'activation_fn': 'gelu', 'dropout': 0.0, 'attention_dropout': 0.0, 'activation_dropout': 0.0, 'encoder_layerdrop': 0.05,
    'dropout_input': 0.0, 'layer_norm_first': False, 'conv_bias': False, 'conv_pos': 128, 'conv_pos_groups': 16,
    'relative_position_embedding': True, 'num_buckets': 320, 'max_distance': 800, 'gru_rel_pos': True, 'deep_norm': True,
    'input_patch_size': 16, 'layer_wise_gradient_decay_ratio': 0.6, 'embed_dim': 512, 'finetuned_model': False}


def official_shapes(finetuned:bool=False)->dict:
    "Key -> shape of the official BEATs iter3+ state dict, written from microsoft/unilm beats/BEATs.py and backbone.py."
    d, ffn, heads = 768, 3072, 12
    shapes = {'post_extract_proj.weight': (d, 512), 'post_extract_proj.bias': (d,), 'patch_embedding.weight': (512, 1, 16, 16),
              'layer_norm.weight': (512,), 'layer_norm.bias': (512,),
              # weight_norm(conv, dim=2): g keeps the kernel axis, v the grouped conv weight (768 / 16 = 48 input channels per group)
              'encoder.pos_conv.0.bias': (d,), 'encoder.pos_conv.0.weight_g': (1, 1, 128), 'encoder.pos_conv.0.weight_v': (d, d // 16, 128),
              'encoder.layer_norm.weight': (d,), 'encoder.layer_norm.bias': (d,)}
    for i in range(12):
        layer = f'encoder.layers.{i}.'
        for proj in ('k_proj', 'v_proj', 'q_proj', 'out_proj'):
            shapes[f'{layer}self_attn.{proj}.weight'], shapes[f'{layer}self_attn.{proj}.bias'] = (d, d), (d,)
        shapes.update({f'{layer}self_attn.relative_attention_bias.weight': (320, heads),
                       f'{layer}self_attn.grep_linear.weight': (8, d // heads), f'{layer}self_attn.grep_linear.bias': (8,),
                       f'{layer}self_attn.grep_a': (1, heads, 1, 1),
                       f'{layer}self_attn_layer_norm.weight': (d,), f'{layer}self_attn_layer_norm.bias': (d,),
                       f'{layer}fc1.weight': (ffn, d), f'{layer}fc1.bias': (ffn,), f'{layer}fc2.weight': (d, ffn), f'{layer}fc2.bias': (d,),
                       f'{layer}final_layer_norm.weight': (d,), f'{layer}final_layer_norm.bias': (d,)})
    if finetuned: shapes.update({'predictor.weight': (527, d), 'predictor.bias': (527,)})
    return shapes


def official_state(finetuned:bool=False, seed:int=0)->dict:
    "Random tensors under the official key names; the relative position table is one tensor shared by all layers, as saved."
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) for k, s in official_shapes(finetuned).items()}
    table = state['encoder.layers.0.self_attn.relative_attention_bias.weight']
    return {k: table if k.endswith('relative_attention_bias.weight') else v for k, v in state.items()}


def save_official(path:Path, state:dict, **cfg)->Path:
    "An official-format .pt: {'cfg': dict, 'model': state dict} (fine-tuned files also carry label_dict)."
    checkpoint = {'cfg': {**ITER3_PLUS_CFG, **cfg}, 'model': state}
    if cfg.get('finetuned_model'): checkpoint['label_dict'] = {0: 'Speech', 1: 'Music'}
    torch.save(checkpoint, path)
    return path


def beats_config(**overrides)->ExperimentConfig:
    return ExperimentConfig(**{'audio_encoder': 'beats', 'sample_rate': 16000, **overrides})


def numpy_kaldi_fbank(signal, sr=16000, n_mels=128, win=400, hop=160, n_fft=512, low=20.0):
    "Kaldi's fbank (torchaudio.compliance.kaldi defaults, as BEATs calls it) in float64 NumPy, one frame at a time: frames x n_mels."
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
    edges = mel(low) + np.arange(n_mels + 2) * (mel(sr / 2) - mel(low)) / (n_mels + 1)
    bin_mel = mel(np.arange(n_fft // 2 + 1) * sr / n_fft)
    banks = np.maximum(0, np.minimum((bin_mel - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                                     (edges[2:, None] - bin_mel) / (edges[2:, None] - edges[1:-1, None])))
    banks[:, -1] = 0
    povey = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / (win - 1))) ** 0.85
    rows = []
    for start in range(0, len(signal) - win + 1, hop):
        x = signal[start:start + win].astype(np.float64) * 32768
        x = x - x.mean()
        x = (x - 0.97 * np.concatenate([x[:1], x[:-1]])) * povey
        rows.append(np.log(np.maximum(banks @ (np.abs(np.fft.rfft(x, n_fft)) ** 2), np.finfo(np.float32).eps)))
    return np.stack(rows)


def test_fbank_matches_a_numpy_kaldi_reference():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    signals = np.stack([rng.standard_normal(16000) * 0.05, 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(16000)])
    fbank = KaldiFbank()
    ours = fbank(torch.tensor(signals, dtype=torch.float32))
    assert ours.shape == (2, 128, 1 + (16000 - 400) // 160) and fbank.n_frames(16000) == 98
    for signal, got in zip(signals, ours):
        expected = (numpy_kaldi_fbank(signal.astype(np.float32)) - 15.41663) / (2 * 6.55582)  # BEATs' normalisation
        np.testing.assert_allclose(got.T.double().numpy(), expected, atol=1e-3)


def test_registered_and_built_from_config():
    assert AUDIO_ENCODERS.get('beats') is BEATsAudioEncoder
    enc = BEATsAudioEncoder.from_config(beats_config(audio_weights='none', audio_blocks=2))
    assert len(enc.net.encoder.layers) == 2 and enc.out_dim == 768 and isinstance(enc.frontend, KaldiFbank)
    # weights=False (a model folder's rebuild): no file is read, whatever audio_weights says
    assert isinstance(BEATsAudioEncoder.from_config(beats_config(audio_weights='/no/such.pt', audio_blocks=1), weights=False), BEATsAudioEncoder)
    with pytest.raises(ValueError, match="needs sample_rate=16000, got sample_rate=32000"):
        BEATsAudioEncoder.from_config(beats_config(sample_rate=32000, audio_weights='none'))
    with pytest.raises(ValueError, match='audio_blocks=13: BEATs has 12 layers'):
        BEATsAudioEncoder.from_config(beats_config(audio_weights='none', audio_blocks=13))


@pytest.fixture(scope='module')
def official_file(tmp_path_factory):
    "One official-format BEATs_iter3_plus_AS2M.pt with random values (360 MB: written once for the module)."
    state = official_state()
    return save_official(tmp_path_factory.mktemp('beats') / 'BEATs_iter3_plus_AS2M.pt', state), state


def test_official_checkpoint_loads_strictly_every_tensor_in_place(official_file):
    path, state = official_file
    enc = BEATsAudioEncoder.from_config(beats_config(audio_weights=str(path)))
    ours = enc.net.state_dict()
    assert set(ours) == set(state)
    for key, value in state.items(): assert torch.equal(ours[key], value), key
    assert enc.net.cfg.layer_wise_gradient_decay_ratio == 0.6 and enc.net.cfg.max_distance == 800  # the file's cfg


def test_audio_blocks_leave_out_only_the_upper_layers(official_file):
    path, state = official_file
    enc = BEATsAudioEncoder.from_config(beats_config(audio_weights=str(path), audio_blocks=3))
    assert len(enc.net.encoder.layers) == 3
    assert torch.equal(enc.net.encoder.layers[2].self_attn.grep_a, state['encoder.layers.2.self_attn.grep_a'])
    broken = {k: v for k, v in state.items() if k != 'encoder.layers.1.fc1.bias'}  # a kept layer's key missing is still an error
    with pytest.raises(ValueError, match=r"missing \['encoder.layers.1.fc1.bias'\]"):
        enc.net.load_official(broken, 'three_layers.pt')


def test_finetuned_checkpoint_leaves_out_only_the_classifier(tmp_path):
    state = official_state(finetuned=True)
    path = save_official(tmp_path / 'BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt', state, finetuned_model=True)
    enc = BEATsAudioEncoder.from_config(beats_config(audio_weights=str(path), audio_blocks=12))
    assert torch.equal(enc.net.encoder.layers[11].fc2.weight, state['encoder.layers.11.fc2.weight'])
    assert not any(k.startswith('predictor') for k in enc.state_dict())
    enc.net.cfg = BEATsConfig(**ITER3_PLUS_CFG)  # the classifier keys under a cfg that is not fine-tuned are not ignored
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['predictor.bias', 'predictor.weight'\]"):
        enc.net.load_official(state, 'not_finetuned.pt')


@pytest.fixture(scope='module')
def full_net():
    return BEATs()


def _renamed(state): state['encoder.layers.0.fc1.kernel'] = state.pop('encoder.layers.0.fc1.weight'); return state
def _missing(state): del state['encoder.pos_conv.0.weight_g']; return state
def _extra(state): state['encoder.layers.12.fc1.weight'] = torch.zeros(1); return state
def _reshaped(state): state['patch_embedding.weight'] = torch.zeros(512, 1, 8, 8); return state
def _two_tables(state): state['encoder.layers.5.self_attn.relative_attention_bias.weight'] = torch.zeros(320, 12); return state

@pytest.mark.parametrize('corrupt, message', [
    (_renamed, r"missing \['encoder.layers.0.fc1.weight'\], unexpected \['encoder.layers.0.fc1.kernel'\]"),
    (_missing, r"missing \['encoder.pos_conv.0.weight_g'\], unexpected \[\]"),
    (_extra, r"missing \[\], unexpected \['encoder.layers.12.fc1.weight'\]"),
    (_reshaped, r"size mismatch for patch_embedding.weight"),
    (_two_tables, r"relative position tables of the layers differ")])
def test_a_wrong_or_missing_key_is_a_clear_error(full_net, corrupt, message):
    with pytest.raises(ValueError, match=message) as err:
        full_net.load_official(corrupt(official_state()), 'broken.pt')
    assert str(err.value).startswith('broken.pt: ')


def test_a_file_that_is_not_an_official_checkpoint_is_refused(tmp_path):
    bare = tmp_path / 'bare.pt'
    torch.save({'model': {}}, bare)  # no cfg
    with pytest.raises(ValueError, match="bare.pt: an official BEATs checkpoint is a dict with 'cfg' and 'model', found \\['model'\\]"):
        BEATsAudioEncoder.from_config(beats_config(audio_weights=str(bare)))
    other = save_official(tmp_path / 'other.pt', {}, max_distance=1280)
    with pytest.raises(ValueError, match=r"other.pt: a BEATs architecture other than iter3\+'s.*max_distance=1280 \(iter3\+: 800\)"):
        BEATsAudioEncoder.from_config(beats_config(audio_weights=str(other)))
    with pytest.raises(FileNotFoundError, match='no such file'):
        BEATsAudioEncoder.from_config(beats_config(audio_weights=str(tmp_path / 'missing.pt')))


def test_gradient_decays_by_the_configured_ratio_per_layer():
    "The official layer-wise gradient decay: below two layers, the patch embedding's gradient is ratio ** 2 of the undecayed one."
    torch.manual_seed(0)
    plain = BEATsAudioEncoder(BEATsConfig(**{**ITER3_PLUS_CFG, 'layer_wise_gradient_decay_ratio': 1.0}), blocks=2).eval()
    decayed = BEATsAudioEncoder(BEATsConfig(**{**ITER3_PLUS_CFG, 'layer_wise_gradient_decay_ratio': 0.6}), blocks=2).eval()
    decayed.load_state_dict(plain.state_dict())
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    for enc in (plain, decayed): enc(wave, torch.tensor([16000])).pooled.sum().backward()
    torch.testing.assert_close(decayed.net.patch_embedding.weight.grad, plain.net.patch_embedding.weight.grad * 0.6 ** 2)
    torch.testing.assert_close(decayed.net.encoder.layers[1].fc2.weight.grad, plain.net.encoder.layers[1].fc2.weight.grad)


def test_specaugment_wraps_the_fbank_front_end():
    from laretrieval.augment import AugmentConfig, SpecAugment
    enc = BEATsAudioEncoder(blocks=1)
    enc.augment_frontend(lambda fbank: SpecAugment(fbank, AugmentConfig(specaug_p=1.0), torch.Generator().manual_seed(0)))
    enc.train()
    spec = enc.frontend(torch.randn(2, 16000) * 0.1)
    assert spec.shape == (2, 128, 98) and (spec == 0).any()  # (B, n_mels, frames), masked cells at mask_value
    out = enc(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000]))
    assert out.mask.sum(1).tolist() == [7, 3]


@pytest.fixture(scope='module')
def small_beats():
    torch.manual_seed(0)
    return BEATsAudioEncoder.from_config(beats_config(audio_weights='none', audio_blocks=1))


@pytest.mark.slow  # 30 s clips through one full-width layer
def test_frames_on_1_10_30_s_clips(small_beats):
    shapes = check_frames(small_beats)
    steps = lambda samples: (samples - 400) // 2560 + 1  # time steps whose first 25 ms frame lies inside the clip
    assert shapes[1] == (steps(16000), [steps(16000), steps(8000)])
    assert shapes[10] == (62, [62, steps(80000)])                       # one 10 s window: 62 steps
    assert shapes[30] == (3 * 62, [3 * 62, 62 + steps(80000)])          # 15 s: a full window and half of the next


def test_pooling(small_beats):
    check_pooling(small_beats)


@pytest.mark.slow  # two epochs of the tiny run with a one-layer BEATs
def test_learns(tmp_path):
    check_learns(tmp_path, audio_encoder='beats', sample_rate=16000, audio_blocks=1, audio_weights='none')


@pytest.mark.slow  # a `laretrieval` process
def test_cli_trains_with_beats(tmp_path):
    params = tiny(audio_encoder='beats', sample_rate=16000, audio_blocks=1, audio_weights='none')
    proc = subprocess.run([str(Path(sys.executable).parent / 'laretrieval'), 'train', '--output-dir', str(tmp_path / 'run'), '--quiet',
                           *set_args(params)], capture_output=True, text=True, env=offline_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert 0 <= metrics['test']['t2a']['mAP@10'] <= 1


def test_mixup_mixes_its_fbank_windows(small_beats):
    check_mixup(small_beats, seconds=12.0)  # clips of two 10 s windows and one of one: the rows of each are found
