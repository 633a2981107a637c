"Caption rewriting on real Clotho captions: interrupted and resumed back-translation, a local transformers model, extra caption files."
import json

import pandas as pd
import pytest
import torch

from laretrieval.augment import add_extra_captions, read_caption_table
from laretrieval.datasets import Clip
from laretrieval.backends import TransformersBackend
from laretrieval.rewrite import Backend, OfflineBackend, Rewriter, back_translate, pseudo_translate


class InterruptAfter(Backend):
    "An OfflineBackend that is interrupted (as by Ctrl-C or a killed job) instead of answering past `limit` requests."
    def __init__(self, limit):
        super().__init__()
        self.inner, self.limit, self.answered, self.batch_size = OfflineBackend(), limit, 0, OfflineBackend.batch_size

    def identity(self): return self.inner.identity()

    def _generate(self, requests):
        if self.answered + len(requests) > self.limit: raise KeyboardInterrupt
        self.answered += len(requests)
        return self.inner._generate(requests)


class MustNotBeCalled(OfflineBackend):
    "The offline backend's identity, but any call is a failure: a rerun must be answered by the cache alone."
    def _generate(self, requests): raise AssertionError(f'backend called for {len(requests)} request(s)')


def clotho_captions(shared_data, n=1000):
    "The first `n` distinct captions of the Clotho development file, in file order."
    table = read_caption_table(shared_data / 'clotho_captions' / 'clotho_captions_development.csv')
    captions = list(dict.fromkeys(c for caps in table.values() for c in caps))
    return captions[:n]


def cache_lines(path): return [json.loads(line) for line in path.read_text().splitlines()]


def test_back_translation_of_1000_clotho_captions_interrupted_resumed_rerun_offline(shared_data, tmp_path):
    captions = clotho_captions(shared_data)
    assert len(captions) == 1000
    forward_file, back_file = tmp_path / 'to_German.jsonl', tmp_path / 'to_English.jsonl'

    def run(forward_backend, back_backend):
        return back_translate(captions, Rewriter(forward_backend, 'translate', forward_file, progress=False),
                              Rewriter(back_backend, 'translate', back_file, progress=False), language='German')

    # 1: interrupted during the first step, after 4 batches of 64
    with pytest.raises(KeyboardInterrupt):
        run(InterruptAfter(300), OfflineBackend())
    assert len(cache_lines(forward_file)) == 256 and not back_file.exists()

    # 2: resumed; the first step finishes, the second is interrupted after 7 batches
    first = OfflineBackend()
    with pytest.raises(KeyboardInterrupt):
        run(first, InterruptAfter(500))
    assert first.calls == 1000 - 256
    assert len(cache_lines(back_file)) == 448
    with open(back_file, 'a') as f: f.write('{"key": "0123456789abcdef", "prompt": "tra')  # a write cut short by a kill

    # 3: resumed again: only the missing back-translations are generated, the cut line is counted and repaired
    forward, back = OfflineBackend(), OfflineBackend()
    with pytest.warns(UserWarning, match='truncated_lines=1'):
        results, (r1, r2) = run(forward, back)
    assert (forward.calls, back.calls) == (0, 1000 - 448)
    assert (r1.from_cache, r1.generated, r2.from_cache, r2.generated, r2.truncated_lines) == (1000, 0, 448, 552, 1)
    assert (r1.ok, r2.ok, r2.errors, r2.refused) == (1000, 1000, 0, 0)
    assert [r.output for r in results] == [pseudo_translate(pseudo_translate(c, 'German'), 'English') for c in captions]
    assert sum(r.output != c for r, c in zip(results, captions)) > 300  # the synonym rules changed many captions

    # exactly one cached result per caption in each step, keyed by that caption's request
    fwd = Rewriter(OfflineBackend(), 'translate', forward_file, progress=False)
    forward_records, back_records = cache_lines(forward_file), cache_lines(back_file)
    assert sorted(r['key'] for r in forward_records) == sorted(fwd.key(dict(text=c, language='German')) for c in captions)
    pivots = [pseudo_translate(c, 'German') for c in captions]
    assert sorted(r['key'] for r in back_records) == sorted(fwd.key(dict(text=p, language='English')) for p in pivots)
    assert all(r['status'] == 'ok' for r in forward_records + back_records)

    # 4: a second run makes no call at all
    results2, (s1, s2) = run(MustNotBeCalled(), MustNotBeCalled())
    assert (s1.backend_calls, s2.backend_calls, s1.from_cache, s2.from_cache) == (0, 0, 1000, 1000)
    assert [r.output for r in results2] == [r.output for r in results]
    assert len(cache_lines(forward_file)) == 1000 and len(cache_lines(back_file)) == 1000


def tiny_marian(folder, words, seed):
    "A random-weight MarianMT model and a word-level fast tokenizer, built offline and saved like a hub model."
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(['<pad>', '</s>', '<unk>', *sorted(set(words))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single='$A </s>', special_tokens=[('</s>', 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='<pad>', eos_token='</s>', unk_token='<unk>').save_pretrained(folder)
    torch.manual_seed(seed)
    config = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1, init_std=0.5)
    MarianMTModel(config).save_pretrained(folder)
    return folder


@pytest.mark.slow  # builds and runs two tiny Marian models
def test_transformers_backend_back_translates_with_local_models(tmp_path):
    captions = ['a dog barks in the distance', 'rain falls on a tin roof', 'a car passes by', 'birds chirp']
    words = ' '.join(captions).split()
    en_xx, xx_en = tiny_marian(tmp_path / 'en-xx', words, 0), tiny_marian(tmp_path / 'xx-en', words, 1)
    to_xx, to_en = TransformersBackend(str(en_xx), max_new_tokens=6), TransformersBackend(str(xx_en), max_new_tokens=6)
    assert to_xx.identity() == dict(backend='transformers', model=str(en_xx), max_new_tokens=6, num_beams=1)
    cache = tmp_path / 'cache'
    results, (r1, r2) = back_translate(captions, Rewriter(to_xx, 'plain', cache / 'xx.jsonl', progress=False),
                                       Rewriter(to_en, 'plain', cache / 'en.jsonl', progress=False), language='xx')
    assert to_xx.calls == 4 and r1.generated == 4 and r1.ok + r1.refused == 4
    for r in results:  # random weights: words of the vocabulary, or nothing (then refused as an empty answer)
        assert r.status in ('ok', 'refused')
        assert r.status == 'refused' or set(r.output.split()) <= set(words)
    # batched generation (padding) answers like one request at a time
    single = TransformersBackend(str(en_xx), max_new_tokens=6, batch_size=1)
    one_by_one, _ = Rewriter(single, 'plain', progress=False).run([dict(text=c, language='xx') for c in captions])
    assert single.calls == 4
    batched, _ = Rewriter(to_xx, 'plain', progress=False).run([dict(text=c, language='xx') for c in captions])
    assert [r.output for r in one_by_one] == [r.output for r in batched]
    assert len({r.output for r in batched}) > 1  # the answers depend on the input (so the comparison means something)
    # the cached run needs no model call
    calls = (to_xx.calls, to_en.calls)
    back_translate(captions, Rewriter(to_xx, 'plain', cache / 'xx.jsonl', progress=False),
                   Rewriter(to_en, 'plain', cache / 'en.jsonl', progress=False), language='xx')
    assert (to_xx.calls, to_en.calls) == calls


def test_phi4_captions_join_clotho_development_clips(shared_data):
    folder = shared_data / 'clotho_captions'
    human = read_caption_table(folder / 'clotho_captions_development.csv')
    clips = [Clip(name, caps, 'train') for name, caps in human.items()]
    phi4 = read_caption_table(folder / 'clotho_captions_development_plus_phi4.csv')
    assert len(clips) == 3839 and len(phi4) == 3839
    merged, report = add_extra_captions(clips, phi4, source='phi4')
    assert report.matched == 3839 and report.clips_without_extra == 0 and report.unknown_ids == []
    # naive reference: caption_1..5 repeat the human captions; count the phi-4 captions (6..10) that are new
    table = pd.read_csv(folder / 'clotho_captions_development_plus_phi4.csv', dtype=str, keep_default_na=False)
    new = [len({row[f'caption_{i}'] for i in range(6, 11)} - {row[f'caption_{i}'] for i in range(1, 6)}) for _, row in table.iterrows()]
    assert report.added == sum(new) == 5 * 3839 - 1  # one phi-4 caption ('Sad Parade.wav') is a human caption
    assert report.already_present == 5 * 3839 + 1
    assert sum(len(c.captions) for c in merged) == 5 * 3839 + report.added
    first = merged[0]
    assert first.clip_id == 'Distorted AM Radio noise.wav'
    assert first.captions[5] == 'A chaotic hum from a disrupted TV channel emits static noise.'
    assert first.meta['caption_sources'] == ['original'] * 5 + ['phi4'] * 5
    # only the phi-4 columns, onto a subset of the clips: unknown ids are an error or a counted skip
    only_llm = read_caption_table(folder / 'clotho_captions_development_plus_phi4.csv',
                                  caption_columns=[f'caption_{i}' for i in range(6, 11)])
    with pytest.raises(KeyError, match='3739 caption id'):
        add_extra_captions(clips[:100], only_llm)
    subset, report = add_extra_captions(clips[:100], only_llm, unknown='skip')
    assert len(report.unknown_ids) == 3739 and report.matched == 100 and report.added == sum(new[:100])
    assert subset[0].captions == merged[0].captions
