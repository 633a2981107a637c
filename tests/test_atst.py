"ATST-Frame (laretrieval.atst): the encoder contract, its front end against a float64 NumPy reference, and strict loading of the official checkpoint layout."
import json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder_contract import check_frames, check_learns, check_mixup, check_pooling
from tiny import offline_env, set_args, tiny, tiny_config
from laretrieval.atst import ATSTFrameEncoder, ATSTMelFrontEnd, FrameAST, atst_encoder_state
from laretrieval.augment import AugmentConfig, SpecAugment
from laretrieval.registry import AUDIO_ENCODERS

ATST = dict(audio_encoder='atst_frame', sample_rate=16000, audio_weights='none')


def atst_config(**overrides): return tiny_config(**{**ATST, 'audio_blocks': 2, **overrides})


@pytest.fixture(scope='module')
def encoder():
    torch.manual_seed(0)
    return ATSTFrameEncoder.from_config(atst_config()).eval()


# --- the official checkpoint layout ---------------------------------------------------------------------------------

def byol_mlp(prefix:str, d_in:int)->dict:
    "Keys and shapes of the official build_mlp(2, d_in, 4096, 256, last_bn=False) (stride-0 tensors: small files)."
    return {f'{prefix}.0.weight': torch.zeros(1).expand(4096, d_in), f'{prefix}.1.weight': torch.ones(4096),
            f'{prefix}.1.bias': torch.zeros(4096), f'{prefix}.1.running_mean': torch.zeros(4096),
            f'{prefix}.1.running_var': torch.ones(4096), f'{prefix}.1.num_batches_tracked': torch.tensor(0),
            f'{prefix}.3.weight': torch.zeros(1).expand(256, 4096)}


def official_checkpoint(real_blocks:int, seed:int=0, hyper_parameters=None)->tuple[dict, dict]:
    """A FrameATSTLightningModule checkpoint of ATST-Frame base (the official atstframe_base.ckpt layout): random teacher
    weights for the embeddings, the first `real_blocks` blocks and norm_frame, stride-0 stand-ins of the right shape for the
    other blocks and the student/BYOL heads. Returns (checkpoint, the teacher encoder's state)."""
    torch.manual_seed(seed)
    reference = FrameAST(depth=1).state_dict()  # the shapes of one block and of the other encoder weights
    teacher = {}
    for i in range(12):
        for k, v in reference.items():
            if k.startswith('blocks.0.'):
                teacher[f'blocks.{i}.' + k[9:]] = torch.randn(v.shape) if i < real_blocks else torch.zeros(1).expand(v.shape)
            elif i == 0: teacher[k] = torch.randn(v.shape)
    state = {f'model.teacher.encoder.{k}': v for k, v in teacher.items()}
    state |= {f'model.student.encoder.{k}': torch.zeros(1).expand(v.shape) for k, v in teacher.items()}
    state |= byol_mlp('model.student.projector', 768) | byol_mlp('model.student.predictor', 256) | byol_mlp('model.teacher.projector', 768)
    checkpoint = {'epoch': 0, 'global_step': 0, 'pytorch-lightning_version': '1.9.0', 'state_dict': state, 'optimizer_states': [],
                  'lr_schedulers': [], 'callbacks': {}, 'hyper_parameters': hyper_parameters or {'arch': 'base', 'patch_h': 64, 'patch_w': 4}}
    return checkpoint, teacher


def test_registered_and_built_from_config():
    assert AUDIO_ENCODERS.get('atst_frame') is ATSTFrameEncoder
    enc = ATSTFrameEncoder.from_config(atst_config(audio_blocks=3))
    assert len(enc.net.blocks) == 3 and enc.out_dim == 768 and enc.sample_rate == 16000
    assert isinstance(enc.frontend, ATSTMelFrontEnd)
    assert not enc.net.mask_embed.requires_grad  # pre-training only: no gradient DDP would wait for


def test_needs_16_khz_and_a_valid_block_count():
    with pytest.raises(ValueError, match=r'sample_rate=16000, got sample_rate=32000'):
        ATSTFrameEncoder.from_config(atst_config(sample_rate=32000))
    with pytest.raises(ValueError, match='audio_blocks=13'): ATSTFrameEncoder(blocks=13)


def test_official_layout_round_trip_is_strict(tmp_path):
    "The teacher encoder of an official-layout checkpoint lands in FrameAST; blocks 2-11 (dropped by audio_blocks=2) are the only keys left over."
    checkpoint, teacher = official_checkpoint(real_blocks=2)
    torch.save(checkpoint, tmp_path / 'atstframe_base.ckpt')
    enc = ATSTFrameEncoder.from_config(atst_config(audio_weights=str(tmp_path / 'atstframe_base.ckpt')))
    state = enc.net.state_dict()
    assert set(state) == {k for k in teacher if not k.startswith('blocks.') or int(k.split('.')[1]) < 2}
    for k in ('blocks.1.attn.qkv.weight', 'blocks.0.mlp.fc2.bias', 'patch_embed.patch_embed.weight', 'pos_embed', 'mask_embed',
              'norm_frame.weight'):
        assert torch.equal(state[k], teacher[k]), k
    assert not torch.equal(state['blocks.0.attn.qkv.weight'], checkpoint['state_dict']['model.student.encoder.blocks.0.attn.qkv.weight'].contiguous())


@pytest.mark.slow  # the full-size encoder
def test_all_twelve_blocks_load(tmp_path):
    checkpoint, teacher = official_checkpoint(real_blocks=12)
    torch.save(checkpoint, tmp_path / 'full.ckpt')
    enc = ATSTFrameEncoder(); enc.load_official(tmp_path / 'full.ckpt')
    assert torch.equal(enc.net.blocks[11].mlp.fc1.weight.detach(), teacher['blocks.11.mlp.fc1.weight'])


@pytest.mark.parametrize('change, message', [
    (lambda s: s.pop('model.teacher.encoder.norm_frame.weight'), 'norm_frame.weight'),                  # missing
    (lambda s: s.update({'model.teacher.encoder.blocks.0.attn.qkv.bias': torch.zeros(2304)}), 'qkv.bias'),  # unexpected
    (lambda s: s.update({'model.teacher.encoder.blocks.12.norm1.weight': torch.ones(768)}), 'blocks.12'),  # a 13th block is not dropped silently
    (lambda s: s.update({'model.teacher.encoder.pos_embed': torch.zeros(1, 101, 768)}), 'pos_embed'),   # wrong shape
])
def test_a_wrong_or_missing_encoder_key_is_a_clear_error(tmp_path, change, message):
    checkpoint, _ = official_checkpoint(real_blocks=2)
    change(checkpoint['state_dict'])
    torch.save(checkpoint, tmp_path / 'bad.ckpt')
    with pytest.raises(RuntimeError, match=message) as err: ATSTFrameEncoder(blocks=2).load_official(tmp_path / 'bad.ckpt')
    assert 'bad.ckpt' in str(err.value)


def test_a_file_without_the_teacher_encoder_is_a_clear_error(tmp_path):
    checkpoint, teacher = official_checkpoint(real_blocks=1)
    torch.save(teacher, tmp_path / 'plain.pt')  # a bare encoder state dict, not the Lightning checkpoint
    with pytest.raises(ValueError, match="no 'state_dict'"): atst_encoder_state(tmp_path / 'plain.pt')
    torch.save({'state_dict': {k.replace('teacher', 'other'): v for k, v in checkpoint['state_dict'].items()}}, tmp_path / 'other.ckpt')
    with pytest.raises(KeyError, match=r"model\.teacher\.encoder"): atst_encoder_state(tmp_path / 'other.ckpt')


class AttributeDict(dict):
    "Stands for a class of Lightning's that a checkpoint pickles (e.g. hyper_parameters as an AttributeDict)."


def test_checkpoint_naming_other_classes_is_read_without_running_them(tmp_path):
    checkpoint, teacher = official_checkpoint(real_blocks=1, hyper_parameters=AttributeDict(arch='base'))
    torch.save(checkpoint, tmp_path / 'lightning.ckpt')
    with pytest.raises(Exception): torch.load(tmp_path / 'lightning.ckpt', weights_only=True)  # plain weights-only loading refuses it
    state = atst_encoder_state(tmp_path / 'lightning.ckpt')
    assert torch.equal(state['blocks.0.norm1.weight'], teacher['blocks.0.norm1.weight'])


def test_official_weights_come_from_a_local_copy(tmp_path, monkeypatch):
    "'' (the official file): it is on Google Drive only, so it is read from the hub cache, or a clear error says where to put it."
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(FileNotFoundError, match='Google Drive') as err: ATSTFrameEncoder.from_config(atst_config(audio_weights=''))
    assert str(tmp_path / 'hub' / 'checkpoints' / 'atstframe_base.ckpt') in str(err.value)
    checkpoint, teacher = official_checkpoint(real_blocks=1)
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(checkpoint, tmp_path / 'hub' / 'checkpoints' / 'atstframe_base.ckpt')
    enc = ATSTFrameEncoder.from_config(atst_config(audio_weights='', audio_blocks=1))
    assert torch.equal(enc.net.blocks[0].norm1.weight.detach(), teacher['blocks.0.norm1.weight'])
    assert ATSTFrameEncoder.from_config(atst_config(audio_weights=''), weights=False)  # the caller loads weights: no file read


# --- the transformer ------------------------------------------------------------------------------------------------

def official_intermediate_layers(net:FrameAST, mel:torch.Tensor, n_frames:torch.Tensor, n:int)->torch.Tensor:
    """audiossl's FrameAST.get_intermediate_layers(scene=False) written out op by op on `net`'s weights: einops' mel-major
    patches, pos_embed rows 1..T, blocks with -10000 added to the scores of padded keys, norm_frame of the last `n` blocks."""
    F = torch.nn.functional
    b, m, w = mel.shape
    t = w // 4
    patches = torch.stack([torch.cat([mel[:, row, 4 * i:4 * i + 4] for row in range(m)], dim=1) for i in range(t)], dim=1)
    x = F.linear(patches, net.patch_embed.patch_embed.weight, net.patch_embed.patch_embed.bias) + net.pos_embed[:, 1:t + 1]
    patch_length = (n_frames - n_frames % 4) // 4
    outputs = []
    for i, blk in enumerate(net.blocks):
        heads, c = blk.attn.heads, x.shape[-1]
        add = -10000.0 * (torch.arange(t)[None] >= patch_length[:, None]).float()[:, None, None, :]
        h = F.layer_norm(x, (c,), blk.norm1.weight, blk.norm1.bias, 1e-6)
        q, k, v = F.linear(h, blk.attn.qkv.weight).reshape(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5 + add).softmax(-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(b, t, c), blk.attn.proj.weight, blk.attn.proj.bias)
        h = F.layer_norm(x, (c,), blk.norm2.weight, blk.norm2.bias, 1e-6)
        x = x + F.linear(F.gelu(F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        if len(net.blocks) - i <= n: outputs.append(F.layer_norm(x, (c,), net.norm_frame.weight, net.norm_frame.bias, 1e-6))
    return torch.cat(outputs, dim=-1)


@pytest.mark.parametrize('layers', [1, 3])
def test_frame_ast_is_the_official_computation(layers):
    torch.manual_seed(0)
    net = FrameAST(dim=48, depth=3, heads=4).eval()
    for p in net.parameters(): p.data.normal_(0, 0.2)  # not the near-identity initial LayerNorms
    mel, n_frames = torch.randn(2, 64, 43), torch.tensor([43, 22])
    with torch.no_grad():
        ours = net(mel, (n_frames - n_frames % 4) // 4, layers)
        ref = official_intermediate_layers(net, mel, n_frames, layers)
    assert ours.shape == (2, 10, 48 * layers)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


# --- front end ------------------------------------------------------------------------------------------------------

def reference_mel(wave:np.ndarray)->np.ndarray:
    "ATST-Frame's front end in float64 NumPy (torchaudio MelSpectrogram + AmplitudeToDB(top_db=80) + MinMax), zeros after the end."
    n_fft, hop, sr, n_mels = 1024, 160, 16000, 64
    start = wave[1:n_fft // 2 + 1][::-1] if len(wave) > n_fft // 2 else np.zeros(n_fft // 2)
    padded = np.concatenate([start, wave, np.zeros(n_fft // 2)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[t * hop:t * hop + n_fft] * window for t in range(len(wave) // hop + 1)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel_of = lambda f: 2595 * np.log10(1 + f / 700)
    points = 700 * (10 ** (np.linspace(mel_of(60.0), mel_of(7800.0), n_mels + 2) / 2595) - 1)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    banks = np.array([np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
                      for lo, mid, hi in zip(points[:-2], points[1:-1], points[2:])])
    db = 10 * np.log10(np.maximum(banks @ power.T, 1e-10))
    db = np.maximum(db, db.max() - 80)
    return (db + 79.6482) / (50.6842 + 79.6482) * 2 - 1


@pytest.mark.parametrize('n', [400, 16000, 33333])
def test_front_end_matches_a_float64_reference(n):
    rng = np.random.default_rng(n)
    t = np.arange(n) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 3000 * t) * t) + rng.normal(0, 0.02, n)
    ours = ATSTMelFrontEnd()(torch.tensor(wave, dtype=torch.float32)[None])[0].numpy()
    ref = reference_mel(wave)
    assert ours.shape == ref.shape == (64, n // 160 + 1)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_front_end_stays_float32_under_mixed_precision():
    waves = torch.randn(2, 16000) * 0.1
    front = ATSTMelFrontEnd()
    with torch.autocast('cpu', dtype=torch.bfloat16): mixed = front(waves.bfloat16())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, front(waves.bfloat16().float()))


def test_spec_augment_wraps_the_front_end(encoder):
    "augment_frontend puts SpecAugment on the (B, 64, frames) spectrogram: it masks in training, not in evaluation."
    enc = ATSTFrameEncoder(blocks=1)
    enc.augment_frontend(lambda f: SpecAugment(f, AugmentConfig(specaug_p=1.0)))
    waves, lengths = torch.randn(2, 32000) * 0.1, torch.tensor([32000, 20000])
    enc.eval()
    with torch.no_grad(): clean = enc(waves, lengths).frames
    enc.frontend.train()
    with torch.no_grad():
        masked = enc.frontend(waves, lengths)
        augmented = enc(waves, lengths).frames
    assert masked.shape == (2, 64, 201) and (masked == 0).any()
    assert not torch.allclose(augmented, clean)


# --- the contract ---------------------------------------------------------------------------------------------------

def test_frames_and_masks_on_1_s(encoder):
    assert check_frames(encoder, seconds=(1,)) == {1: (25, [25, 12])}


@pytest.mark.slow  # 30 s clips through two blocks
def test_frames_and_masks_on_1_10_30_s(encoder):
    shapes = check_frames(encoder)
    assert shapes[1] == (25, [25, 12])            # (16000 // 160 + 1) // 4 tokens of 40 ms
    assert shapes[10] == (250, [250, 125])        # one chunk of 1001 frames
    assert shapes[30] == (750, [749, 375])        # chunks of 1001, 1001 and 999 frames: 250 + 250 + 249 tokens


def test_pooling(encoder):
    check_pooling(encoder)


def test_pooled_is_the_mean_of_chunk_means(encoder):
    "The official scene vector of a 25 s clip: each 10 s chunk's mean over its real tokens, then the mean over chunks."
    with torch.no_grad():
        out = encoder(torch.randn(1, 400000) * 0.1, torch.tensor([400000]))
    f = out.frames[0]
    assert out.mask[0].sum() == 250 + 250 + 124  # 2501 frames: chunks of 1001, 1001 and 499
    torch.testing.assert_close(out.pooled[0], torch.stack([f[:250].mean(0), f[250:500].mean(0), f[500:624].mean(0)]).mean(0))


def test_a_clip_shorter_than_one_token_gets_one(encoder):
    with torch.no_grad():
        out = encoder(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 200]))
    assert out.mask.sum(1).tolist() == [25, 1] and torch.isfinite(out.pooled).all()


@pytest.mark.slow  # two epochs of the tiny run with a 2-block ATST-Frame
def test_learns(tmp_path):
    check_learns(tmp_path, **ATST, audio_blocks=1)


@pytest.mark.slow  # the full-size encoder
def test_full_size_encoder():
    enc = ATSTFrameEncoder.from_config(atst_config(audio_blocks=0)).eval()
    assert len(enc.net.blocks) == 12 and 85e6 < sum(p.numel() for p in enc.parameters()) < 86e6  # ATST-Frame base
    with torch.no_grad(): out = enc(torch.randn(1, 160000) * 0.1, torch.tensor([160000]))
    assert out.frames.shape == (1, 250, 768) and out.mask.all()


@pytest.mark.slow  # a `laretrieval train` process
def test_cli_trains_with_atst_frame(tmp_path):
    params = tiny(**ATST, audio_blocks=1)
    proc = subprocess.run([str(Path(sys.executable).parent / 'laretrieval'), 'train', '--output-dir', str(tmp_path / 'run'),
                           '--quiet', *set_args(params)], capture_output=True, text=True, env=offline_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert config['audio_encoder'] == 'atst_frame' and config['sample_rate'] == 16000
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert 0 <= metrics['test']['t2a']['mAP@10'] <= 1


def test_mixup_mixes_its_log_mels(encoder):
    check_mixup(encoder, seconds=12.0)  # two 10 s chunks and one
