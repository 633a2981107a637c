"PANNs CNN14 and ResNet38 encoders: built from the config, the official checkpoint layout loaded strictly, the encoder contract (frames, pooling, learning), the CLI."
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder_contract import check_frames, check_learns, check_mixup, check_pooling
from laretrieval.config import ExperimentConfig
from laretrieval.panns import Cnn14Encoder, PANNsEncoder, ResNet38Encoder, load_panns_weights
from laretrieval.registry import AUDIO_ENCODERS
from tiny import TINY_MODEL, offline_env, set_args

NAMES = {'panns_cnn14': Cnn14Encoder, 'panns_resnet38': ResNet38Encoder}
# one weight of a stage every size keeps, one of the last stage, one of the front end, one of the frozen head
PROBES = {'panns_cnn14': ['conv_block1.conv1.weight', 'conv_block6.bn2.running_var'],
          'panns_resnet38': ['conv_block1.conv1.weight', 'resnet.layer2.0.downsample.1.weight', 'conv_block_after1.conv2.weight']}
COMMON = ['spectrogram_extractor.stft.conv_real.weight', 'logmel_extractor.melW', 'bn0.running_mean', 'fc_audioset.bias']


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official_state(name:str, blocks:int=0, seed:int=0)->dict:
    "A state dict in the official key layout with random values (integer counters kept); `blocks`: only the keys of the first stages."
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in NAMES[name](blocks=blocks).state_dict().items()}


@pytest.fixture(scope='module')
def official_files(tmp_path_factory):
    "Full-size official-layout files, {'iteration', 'model'} as the training script saved them, written once per module."
    folder, made = tmp_path_factory.mktemp('official'), {}
    def get(name):
        if name not in made:
            state = official_state(name)
            torch.save({'iteration': 600000, 'model': state}, folder / f'{name}.pth')
            made[name] = (folder / f'{name}.pth', state)
        return made[name]
    return get


def config(name:str, **overrides)->ExperimentConfig:
    return ExperimentConfig(audio_encoder=name, sample_rate=32000, **overrides)


@pytest.mark.parametrize('name', NAMES)
def test_built_from_the_config_through_the_registry(name):
    encoder = AUDIO_ENCODERS.get(name).from_config(config(name, audio_weights='none'))
    assert type(encoder) is NAMES[name] and (encoder.out_dim, encoder.sample_rate, encoder.downsample) == (2048, 32000, 32)
    small = AUDIO_ENCODERS.get(name).from_config(config(name, audio_blocks=3), weights=False)
    assert small.out_dim == {'panns_cnn14': 256, 'panns_resnet38': 128}[name] and small.n_stages == 3


@pytest.mark.parametrize('name', NAMES)
def test_the_rate_must_be_32k(name):
    with pytest.raises(ValueError, match=f"audio_encoder='{name}' needs sample_rate=32000, got sample_rate=16000"):
        AUDIO_ENCODERS.get(name).from_config(ExperimentConfig(audio_encoder=name, sample_rate=16000, audio_weights='none'))


@pytest.mark.slow  # builds both full-size networks
def test_parameter_counts_are_the_papers():
    "Without the 1,083,456 fixed STFT and mel values, the PANNs paper's Table XII to the unit: CNN14 80,753,615, ResNet38 73,783,247."
    fixed = 2 * 513 * 1024 + 513 * 64
    counts = {n: sum(p.numel() for p in cls().parameters()) - fixed for n, cls in NAMES.items()}
    assert counts == {'panns_cnn14': 80_753_615, 'panns_resnet38': 73_783_247}


@pytest.mark.slow  # full-size networks and 300 MB files
@pytest.mark.parametrize('name', NAMES)
def test_official_layout_round_trip_is_strict_and_lands_every_weight(official_files, name):
    "{'model': state_dict} as torch.save wrote the released .pth files, random values: loaded with strict=True, each probe lands."
    path, state = official_files(name)
    encoder = NAMES[name].from_config(config(name, audio_weights=str(path)))
    loaded = encoder.state_dict()
    assert set(loaded) == set(state)
    for key in PROBES[name] + COMMON: torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0)
    # the AudioSet head is loaded but frozen; the conv stages train
    assert not any(p.requires_grad for m in (encoder.fc1, encoder.fc_audioset, encoder.spectrogram_extractor, encoder.logmel_extractor)
                   for p in m.parameters())
    assert encoder.conv_block1.conv1.weight.requires_grad and encoder.bn0.weight.requires_grad
    # audio_blocks: the full file loads into the first two stages; only the dropped stages' keys are left over
    small = NAMES[name].from_config(config(name, audio_blocks=2, audio_weights=str(path)))
    own = small.state_dict()
    assert set(state) - set(own) == set(small.dropped_keys(state)) and set(own) <= set(state)
    torch.testing.assert_close(own['conv_block1.conv1.weight'], state['conv_block1.conv1.weight'], rtol=0, atol=0)


@pytest.mark.parametrize('name', NAMES)
def test_first_stages_of_the_official_layout_load_strictly(tmp_path, name):
    "The same check in seconds: the official keys of the first two stages (with the front end and head) into audio_blocks=2."
    state = official_state(name, blocks=2)
    torch.save({'iteration': 1, 'model': state}, tmp_path / 'first.pth')
    encoder = NAMES[name].from_config(config(name, audio_blocks=2, audio_weights=str(tmp_path / 'first.pth')))
    for key in COMMON + ['conv_block1.conv2.weight']: torch.testing.assert_close(encoder.state_dict()[key], state[key], rtol=0, atol=0)


def test_a_bare_state_dict_and_a_checkpoint_with_numpy_sampler_state_load(tmp_path):
    "The training script's checkpoint also holds the sampler's numpy arrays: read as data (weights_only), not refused."
    state = official_state('panns_cnn14', blocks=1)
    torch.save(state, tmp_path / 'bare.pth')
    torch.save({'iteration': 1, 'model': state, 'sampler': {'queue': np.arange(5), 'pointers': [np.zeros(3, np.int64)]}},
               tmp_path / 'training.pth')
    for file in ('bare.pth', 'training.pth'):
        encoder = load_panns_weights(Cnn14Encoder(blocks=1), tmp_path / file)
        torch.testing.assert_close(encoder.conv_block1.conv1.weight.detach(), state['conv_block1.conv1.weight'], rtol=0, atol=0)


@pytest.mark.parametrize('name', NAMES)
def test_a_wrong_or_missing_key_is_an_error_naming_it(tmp_path, name):
    state = official_state(name, blocks=1)
    renamed = {('bn0.scale' if k == 'bn0.weight' else k): v for k, v in state.items()}
    torch.save({'model': renamed}, tmp_path / 'renamed.pth')
    with pytest.raises(ValueError, match=r"renamed.pth does not fit .*missing keys: bn0.weight; unexpected keys: bn0.scale"):
        NAMES[name].from_config(config(name, audio_blocks=1, audio_weights=str(tmp_path / 'renamed.pth')))
    del state['fc_audioset.weight']
    torch.save({'model': state}, tmp_path / 'headless.pth')
    with pytest.raises(ValueError, match='missing keys: fc_audioset.weight'):
        NAMES[name].from_config(config(name, audio_blocks=1, audio_weights=str(tmp_path / 'headless.pth')))
    # the other network's file: both start with conv_block1, their second stages differ
    other = 'panns_resnet38' if name == 'panns_cnn14' else 'panns_cnn14'
    torch.save({'model': official_state(other, blocks=2)}, tmp_path / 'other.pth')
    expected = {'panns_cnn14': 'missing keys: conv_block2.conv1.weight', 'panns_resnet38': 'missing keys: resnet.layer1.0.conv1.weight'}
    with pytest.raises(ValueError, match=expected[name]):
        NAMES[name].from_config(config(name, audio_blocks=2, audio_weights=str(tmp_path / 'other.pth')))


def test_a_file_without_a_state_dict_is_refused(tmp_path):
    torch.save({'model': [1, 2]}, tmp_path / 'list.pth')
    with pytest.raises(ValueError, match="list.pth is not a PANNs checkpoint"):
        load_panns_weights(Cnn14Encoder(blocks=1), tmp_path / 'list.pth')


def test_weights_false_reads_no_file():
    encoder = Cnn14Encoder.from_config(config('panns_cnn14', audio_weights='/no/such/file.pth', audio_blocks=1), weights=False)
    assert encoder.n_stages == 1


def test_front_end_matches_torch_stft_and_is_wrapped_by_specaugment():
    from laretrieval.augment import AugmentConfig, SpecAugment
    torch.manual_seed(0)
    encoder = Cnn14Encoder(blocks=1).eval()
    wave = torch.randn(2, 16000) * 0.1
    spec = torch.stft(wave, 1024, 320, window=torch.hann_window(1024), center=True, pad_mode='reflect', return_complex=True)
    naive = 10 * torch.log10((spec.abs() ** 2).transpose(1, 2).matmul(encoder.logmel_extractor.melW).transpose(1, 2).clamp(min=1e-10))
    with torch.no_grad(): mels = encoder.frontend(wave)
    torch.testing.assert_close(mels * (1 + encoder.bn0.eps) ** 0.5, naive, atol=1e-2, rtol=1e-4)
    keys = list(encoder.state_dict())
    encoder.augment_frontend(lambda f: SpecAugment(f, AugmentConfig(specaug_p=1.0), torch.Generator().manual_seed(0)))
    assert list(encoder.state_dict()) == keys  # wrapping does not rename the official keys
    encoder.train()
    out = encoder(wave, torch.tensor([16000, 8000]))
    assert out.frames.shape == (2, 25, 64) and out.mask.sum(1).tolist() == [25, 13]  # (8000 // 320 + 1) // 2


@pytest.mark.slow  # two full-size networks on 1 s, 10 s and 30 s clips
@pytest.mark.parametrize('name', NAMES)
def test_frames_on_1_10_30_second_clips(name):
    encoder = NAMES[name].from_config(config(name, audio_weights='none'))
    # the last real frames of a padded clip see the padding through the receptive field: the padding check is skipped
    shapes = check_frames(encoder, padding_atol=None)
    assert shapes == {1: (3, [3, 1]), 10: (31, [31, 15]), 30: (93, [93, 46])}  # one frame per 32 STFT frames; the whole clip


@pytest.mark.slow
def test_frames_away_from_the_padding_are_the_clips_own():
    encoder = ResNet38Encoder().eval()
    torch.manual_seed(1)
    waves = torch.randn(2, 160000) * 0.1; waves[1, 80000:] = 0
    with torch.no_grad():
        batch = encoder(waves, torch.tensor([160000, 80000]))
        alone = encoder(waves[1:, :80000], torch.tensor([80000]))
    assert alone.frames.shape[1] == int(batch.mask[1].sum()) == 7
    torch.testing.assert_close(alone.frames[0, :4], batch.frames[1, :4], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('name', NAMES)
def test_pooling_and_the_clip_vector(name):
    encoder = NAMES[name](blocks=2).eval()
    check_pooling(encoder)
    n = 64000
    with torch.no_grad(): out = encoder(torch.randn(2, n) * 0.1, torch.tensor([n, n // 4]))
    real = out.frames[1][out.mask[1]]
    torch.testing.assert_close(out.pooled[1], real.max(0).values + real.mean(0))  # max + mean over real frames, as PANNs


def test_a_clip_shorter_than_one_output_frame_keeps_one():
    encoder = Cnn14Encoder().eval()
    with torch.no_grad(): out = encoder(torch.randn(2, 3200) * 0.1, torch.tensor([3200, 1000]))
    assert out.frames.shape == (2, 1, 2048) and out.mask.all()


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_learns_on_the_builtin_set(tmp_path, name):
    check_learns(tmp_path, audio_encoder=name, sample_rate=32000, audio_blocks=2, audio_weights='none')


@pytest.mark.slow
def test_cli_trains_panns_end_to_end(tmp_path):
    params = dict(builtin_clips=40, epochs=1, batch_size=8, **{k: v for k, v in TINY_MODEL.items() if k != 'audio_width'},
                  audio_encoder='panns_resnet38', sample_rate=32000, audio_blocks=2, audio_weights='none', specaug_p=0.5)
    proc = subprocess.run([str(Path(sys.executable).parent / 'laretrieval'), 'train', '--output-dir', str(tmp_path / 'run'),
                           '--quiet', *set_args(params)], capture_output=True, text=True, env=offline_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert 0 <= metrics['test']['t2a']['mAP@10'] <= 1
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['audio_encoder'] == 'panns_resnet38'


def test_front_end_stays_float32_under_mixed_precision():
    "A full-scale sine's STFT power (~512^2 per bin) overflows float16: the front end computes in float32 under autocast."
    encoder = Cnn14Encoder(blocks=1).eval()
    loud = torch.sin(torch.arange(32000) * 2 * torch.pi * 1000 / 32000)[None]
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
        mels = encoder.frontend(loud)
    assert mels.dtype == torch.float32 and torch.isfinite(mels).all()


@pytest.mark.slow  # builds the text model and writes a model folder
def test_a_model_folder_round_trip_keeps_every_panns_weight(tmp_path):
    "save_pretrained / from_pretrained: the official-named front end, bn0 and head come back equal, no download (weights=False)."
    from laretrieval.model import DualEncoder
    cfg = ExperimentConfig(audio_encoder='panns_resnet38', sample_rate=32000, audio_blocks=2, audio_weights='none',
                           embed_dim=16, text_trainable_layers=0)
    model = DualEncoder.from_config(cfg)
    with torch.no_grad(): model.audio_encoder.bn0.running_mean.add_(1.5)  # not the initial value
    model.save_pretrained(tmp_path / 'folder', cfg)
    loaded, _ = DualEncoder.from_pretrained(tmp_path / 'folder')
    saved, back = model.state_dict(), loaded.state_dict()
    assert set(saved) == set(back) and all(torch.equal(saved[k], back[k]) for k in saved)


@pytest.mark.parametrize('name', NAMES)
def test_mixup_mixes_its_log_mels(name):
    check_mixup(NAMES[name](blocks=2))
