"Audio and text encoders: PaSST through hear21passt (random weights), the mel front end, MiniLM on real captions."
import csv
import inspect
import logging
import math
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import (AutoModel, AutoTokenizer, RobertaConfig, RobertaForMaskedLM, RobertaModel, SqueezeBertConfig,
                          SqueezeBertModel)

from laretrieval.audio import LogMelFrontEnd
from laretrieval.encoders import (PaSSTAudioEncoder, PASST_MEL, TextEncoder, import_passt, load_text_model, passt_archs,
                                  passt_spec, resolve_text_model)


@pytest.fixture(scope='module')
def passt():
    torch.manual_seed(0)
    return PaSSTAudioEncoder(pretrained=False)


@pytest.mark.slow  # full-size random PaSST on 30 s clips
def test_random_passt_on_a_30s_clip_gives_the_expected_shapes(passt):
    passt.eval()
    wave = torch.randn(1, 30 * 32000) * 0.1
    with torch.no_grad(): feats = passt(wave, torch.tensor([30 * 32000]))
    assert feats.frames.shape == (1, 3 * 99, 768)   # 3 segments x 99 time steps, PaSST-S width
    assert feats.pooled.shape == (1, 768)
    assert feats.mask.all()
    assert torch.isfinite(feats.frames).all() and feats.frames.abs().sum() > 0


@pytest.mark.slow  # full-size random PaSST on 30 s clips
def test_passt_pooled_vector_is_the_mean_over_real_segments(passt):
    passt.eval()
    first, second = torch.randn(1, 320000) * 0.1, torch.randn(1, 320000) * 0.1
    with torch.no_grad():
        both = passt(torch.cat([first, second], 1), torch.tensor([640000])).pooled
        alone = [passt(w, torch.tensor([320000])).pooled for w in (first, second)]
    torch.testing.assert_close(both, (alone[0] + alone[1]) / 2, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # builds a full-size PaSST
def test_structured_patchout_drops_time_steps_in_training_only(torch_seed=0):
    torch.manual_seed(torch_seed)
    enc = PaSSTAudioEncoder(pretrained=False, max_seconds=10, s_patchout_t=20)
    wave = torch.randn(1, 320000) * 0.1
    enc.train()
    assert enc(wave, torch.tensor([320000])).frames.shape[1] == 99 - 20
    enc.eval()
    with torch.no_grad(): assert enc(wave, torch.tensor([320000])).frames.shape[1] == 99


def test_mel_front_end_matches_hear21passt():
    "Where torchaudio is installed (GPU machines), our front end equals hear21passt's AugmentMelSTFT in eval mode."
    pytest.importorskip('torchaudio')
    from hear21passt.models.preprocess import AugmentMelSTFT
    theirs = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                            fmin=0.0, fmax=None, fmin_aug_range=10, fmax_aug_range=2000).eval()
    ours = LogMelFrontEnd(**PASST_MEL)
    wave = torch.randn(2, 32000 * 3) * 0.1
    torch.testing.assert_close(ours(wave), theirs(wave), atol=1e-5, rtol=0)


def _checkpoint_cfg(passt, constructor):
    "hear21passt's default_cfgs entry (checkpoint URL, input size) that one of its constructors builds."
    variant = re.search(r"_create_vision_transformer\(\s*'([^']+)'", inspect.getsource(getattr(passt, constructor))).group(1)
    return passt.default_cfgs[variant]


def test_passt_archs_cover_every_passt_checkpoint_hear21passt_ships():
    "The names are read from get_model; every PaSST checkpoint in default_cfgs is reachable through one of them."
    passt = import_passt()
    archs = passt_archs()
    assert len(archs) == inspect.getsource(passt.get_model).count('arch ==')  # no branch of get_model missed
    shipped = {k for k, cfg in passt.default_cfgs.items() if 'kkoutini/PaSST' in cfg['url']}
    reached = {re.search(r"_create_vision_transformer\(\s*'([^']+)'", inspect.getsource(getattr(passt, f))).group(1)
               for f in archs.values()}
    assert shipped <= reached, shipped - reached
    with pytest.raises(ValueError, match='passt_s_p16_s16_128_ap468'): passt_spec('passt_s_p16_s14_128_ap469')


def test_passt_specs_agree_with_the_checkpoints_hear21passt_names():
    "Stride, hop and window named in a checkpoint's file name, and the input frames get_model insists on, match the spec."
    passt = import_passt()
    source, checked = inspect.getsource(passt.get_model), 0
    for arch, constructor in passt_archs().items():
        spec, cfg = passt_spec(arch), _checkpoint_cfg(passt, constructor)
        assert passt_spec(constructor) == spec  # the constructor's name is an alias
        for pattern, value in ((r'-s(\d+)-', spec.tstride), (r'stfthop(\d+)', spec.hop_length), (r'(\d+)sec', spec.segment_seconds)):
            if m := re.search(pattern, cfg['url']): assert int(m.group(1)) == value, (arch, pattern); checked += 1
        if re.search(rf'input_tdim must be \d+ for arch={re.escape(arch)}\.', source):
            assert cfg['input_size'][-1] == spec.input_tdim, arch; checked += 1
        assert spec.fstride == spec.tstride and abs(spec.input_tdim * spec.hop_length - spec.segment_seconds * 32000) <= 2 * spec.hop_length
    assert checked >= len(passt_archs())  # most names carry at least one fact to check


@pytest.mark.slow  # about a minute on 2 cores: 14 builds, the hop-100 model's 3830-token windows dominate
@pytest.mark.parametrize('arch', list(passt_archs()))
def test_every_passt_architecture_builds_and_runs_on_its_grid(arch):
    "Random weights, one block: a full-length clip and a 3.3 s clip padded to it, on the grid of the arch's strides and frames."
    torch.manual_seed(0)
    spec = passt_spec(arch)
    enc = PaSSTAudioEncoder(arch, pretrained=False, max_seconds=20, blocks=1).eval()
    steps = (spec.input_tdim - 16) // spec.tstride + 1            # time steps of one window
    n_segments = {10: 2, 20: 1, 30: 1}[spec.segment_seconds]      # 10 s models cut the 20 s; 20 s / 30 s models see one window
    full, short = max(20, spec.segment_seconds) * 32000, int(3.3 * 32000)
    assert len(enc.net.blocks) == 1 and enc.frontend.hop_length == spec.hop_length
    assert tuple(enc.net.patch_embed.stride) == (spec.fstride, spec.tstride)
    with torch.no_grad():
        whole = enc(torch.randn(1, full) * 0.1, torch.tensor([full]))
        padded = enc(F.pad(torch.randn(1, short) * 0.1, (0, full - short)), torch.tensor([short]))
    width = enc.net.cls_token.shape[-1]  # the arch's embed_dim
    assert whole.frames.shape == padded.frames.shape == (1, n_segments * steps, width) and enc.out_dim == width
    assert whole.pooled.shape == (1, width) and torch.isfinite(whole.frames).all()
    assert whole.mask.sum() == n_segments * steps
    assert padded.mask.sum() == math.ceil(short / (spec.hop_length * spec.tstride))  # step t starts at t * hop * tstride
    assert padded.mask[0, :padded.mask.sum()].all()
    assert (padded.frames[0, steps:] == 0).all()  # segments without audio are not run


@pytest.fixture(scope='module')
def minilm():
    return TextEncoder('minilm', pooling='mean').eval()


def test_captions_are_cut_at_32_tokens(minilm):
    tokens = minilm.tokenize(['a dog barks ' * 40, 'rain'])
    assert tokens['input_ids'].shape == (2, 32)


@pytest.mark.slow  # embeds real Clotho captions
def test_minilm_places_captions_of_one_clip_closer_than_captions_of_others(shared_data):
    "Real Clotho captions: the 5 captions of a clip are more alike than captions of different clips."
    with open(shared_data / 'clotho_captions' / 'clotho_captions_evaluation.csv', newline='') as f:
        rows = list(csv.DictReader(f))[:60]
    enc = TextEncoder('minilm', pooling='mean').eval()
    captions = [r[f'caption_{k}'] for r in rows for k in range(1, 6)]
    with torch.no_grad(): v = F.normalize(enc(captions), dim=-1)
    sims = (v @ v.T).reshape(60, 5, 60, 5)
    same = torch.stack([sims[i, :, i, :][~torch.eye(5, dtype=torch.bool)].mean() for i in range(60)])
    other = torch.stack([sims[i, :, [j for j in range(60) if j != i]].mean() for i in range(60)])
    assert same.mean() > other.mean() + 0.2, (same.mean(), other.mean())
    assert (same > other).float().mean() > 0.95  # clip by clip, not only on average


def test_minilm_trains_no_parameter_without_a_path_to_the_output():
    "All layers trainable: no pooler among them, and one backward reaches every trainable parameter."
    enc = TextEncoder('minilm', pooling='first', trainable_layers=-1)
    trainable = {n: p for n, p in enc.named_parameters() if p.requires_grad}
    assert len(trainable) == len(list(enc.parameters())) and not [n for n in trainable if 'pooler' in n]
    enc(['a dog barks loudly', 'rain falls on a tin roof']).sum().backward()
    assert [n for n, p in trainable.items() if p.grad is None] == []


def _tiny_text_model(folder, model_cls, config_cls, **extra):
    "A random-weight transformers model (2 layers, width 32) saved with MiniLM's tokenizer beside it."
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model('minilm'))
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id, **extra)
    torch.manual_seed(0)
    model_cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class _Reports(logging.Handler):
    "Collects transformers' log messages."
    def __init__(self): super().__init__(); self.messages = []
    def emit(self, record): self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log():
    handler, logger = _Reports(), logging.getLogger('transformers')
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_roberta_is_built_without_its_pooler(tmp_path, transformers_log):
    "A RoBERTa checkpoint with pooler weights: no pooler built, every trainable parameter gets a gradient, no pooler-only report."
    from safetensors import safe_open
    folder = _tiny_text_model(tmp_path / 'roberta', RobertaModel, RobertaConfig)
    with safe_open(folder / 'model.safetensors', 'pt') as f: assert any(k.startswith('pooler.') for k in f.keys())
    AutoModel.from_pretrained(folder, add_pooling_layer=False)  # transformers alone reports the unused pooler weights
    assert any('LOAD REPORT' in m and 'pooler.dense.weight' in m for m in transformers_log)
    transformers_log.clear()
    enc = TextEncoder(str(folder), pooling='first', trainable_layers=-1)
    assert not [m for m in transformers_log if 'LOAD REPORT' in m]
    assert type(enc.model).__name__ == 'RobertaModel' and enc.model.pooler is None
    trainable = {n: p for n, p in enc.named_parameters() if p.requires_grad}
    assert len(trainable) == len(list(enc.parameters())) and not [n for n in trainable if 'pooler' in n]
    enc(['a dog barks loudly', 'rain falls on a tin roof']).sum().backward()
    assert [n for n, p in trainable.items() if p.grad is None] == []


def test_a_class_that_always_builds_its_pooler_gets_it_frozen(tmp_path):
    "SqueezeBERT takes no add_pooling_layer: it loads, and its pooler is frozen, so every trainable parameter gets a gradient."
    folder = _tiny_text_model(tmp_path / 'squeezebert', SqueezeBertModel, SqueezeBertConfig, embedding_size=32)
    enc = TextEncoder(str(folder), pooling='mean', trainable_layers=-1)
    assert [n for n, p in enc.named_parameters() if not p.requires_grad] == [n for n, _ in enc.named_parameters() if '.pooler.' in n] != []
    trainable = {n: p for n, p in enc.named_parameters() if p.requires_grad}
    enc(['a dog barks loudly', 'rain falls on a tin roof']).sum().backward()
    assert [n for n, p in trainable.items() if p.grad is None] == []


def test_load_reports_about_other_weights_are_kept(tmp_path, transformers_log):
    "A masked-LM checkpoint (roberta-large on the hub is one): its unused lm_head is still reported."
    folder = _tiny_text_model(tmp_path / 'roberta_mlm', RobertaForMaskedLM, RobertaConfig)
    load_text_model(str(folder))
    assert any('LOAD REPORT' in m and 'lm_head.dense.weight' in m for m in transformers_log)


@pytest.mark.slow  # PaSST (one block) on 12 s clips: segments of 10 s
def test_passt_mixup_mixes_the_segments_of_each_clip():
    from encoder_contract import check_mixup
    torch.manual_seed(0)
    check_mixup(PaSSTAudioEncoder(pretrained=False, blocks=1), seconds=12.0)  # two segments, two, and one


def test_cnn_mixup_mixes_its_log_mels():
    from encoder_contract import check_mixup
    from laretrieval.encoders import CNNAudioEncoder
    torch.manual_seed(0)
    check_mixup(CNNAudioEncoder(16000, width=8))
