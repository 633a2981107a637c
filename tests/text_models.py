"Small text models for tests: built from configs with random weights, saved like hub models (no download)."
from pathlib import Path

import torch


def tiny_roberta(folder:Path, texts:list[str]):
    "A RoBERTa-architecture encoder with random weights (2 narrow layers) and a byte-level BPE tokenizer trained on `texts`."
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=300, min_frequency=1, special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>'])
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token='<s>', eos_token='</s>', unk_token='<unk>',
                                     pad_token='<pad>', mask_token='<mask>', cls_token='<s>', sep_token='</s>')
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    RobertaModel(config).save_pretrained(folder)  # with its pooler, as roberta-large's checkpoint has one
