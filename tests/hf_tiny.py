"Tiny random-weight `transformers` audio models (AST, CLAP, Whisper, wav2vec 2, HuBERT) saved as save_pretrained folders with their feature extractors: hf:<folder> without a download."
from pathlib import Path

import torch
from transformers import (ASTConfig, ASTFeatureExtractor, ASTModel, AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel,
                          HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model, WhisperConfig,
                          WhisperFeatureExtractor, WhisperModel)

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
WAVEFORM = dict(**SMALL, conv_dim=(16,) * 7, feat_extract_norm='layer', do_stable_layer_norm=True, num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2, vocab_size=32)


def clap_config(layers:int=2, projection_dim:int=16)->ClapConfig:
    "A tiny unfused CLAP: an 8-channel HTSAT (one Swin block per stage) and a 32-d text tower over MiniLM's vocabulary."
    text = dict(**{**SMALL, 'num_hidden_layers': layers}, vocab_size=30522, pad_token_id=0, max_position_embeddings=96)
    audio = dict(patch_embeds_hidden_size=8, hidden_size=64, depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1])
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)


def tiny_model(kind:str, layers:int=2):
    "(model, feature extractor) of a tiny random model of `kind`: ast, clap, whisper, wav2vec2, hubert."
    torch.manual_seed(0)
    if kind == 'ast': return ASTModel(ASTConfig(**{**SMALL, 'num_hidden_layers': layers})), ASTFeatureExtractor()
    if kind == 'clap': return ClapModel(clap_config(layers)), ClapFeatureExtractor(truncation='rand_trunc')
    if kind == 'whisper':
        config = WhisperConfig(d_model=32, encoder_layers=layers, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                               decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100, max_target_positions=32,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, begin_suppress_tokens=None)
        return WhisperModel(config), WhisperFeatureExtractor()
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    if kind == 'wav2vec2': return Wav2Vec2Model(Wav2Vec2Config(**{**WAVEFORM, 'num_hidden_layers': layers})), extractor
    if kind == 'hubert': return HubertModel(HubertConfig(**{**WAVEFORM, 'num_hidden_layers': layers})), extractor
    raise ValueError(kind)


def save_tiny(kind:str, folder:Path, layers:int=2)->Path:
    "Save a tiny `kind` model, its feature extractor (and for CLAP the offline MiniLM tokenizer) into `folder`."
    model, extractor = tiny_model(kind, layers)
    model.save_pretrained(folder); extractor.save_pretrained(folder)
    if kind == 'clap':
        from laretrieval.encoders import resolve_text_model
        AutoTokenizer.from_pretrained(resolve_text_model('minilm')).save_pretrained(folder)
    return Path(folder)
