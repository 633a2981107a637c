"MTLD of captions: the wrapper against a naive MTLD, and the thesis's human-vs-phi-4 comparison on real Clotho captions."
import functools
import math

import numpy as np
import pandas as pd
import pytest

from laretrieval.lexical import (caption_mtld, has_full_factor, mtld_summary, mtld_table, per_clip, plot_mtld,
                                 read_caption_sources, spread_test)


def naive_mtld(words, threshold=0.72):
    "MTLD from its definition (McCarthy & Jarvis 2010), with lexicalrichness's convention for a text of distinct words."
    def factors(seq):
        count, types, n, ttr = 0.0, set(), 0, 1.0
        for w in seq:
            n += 1; types.add(w); ttr = len(types) / n
            if ttr <= threshold: count += 1; types, n = set(), 0
        if n: count += (1 - ttr) / (1 - threshold)
        return count
    values = []
    for seq in (words, words[::-1]):
        f = factors(seq)
        if f == 0: f = 1.0  # all words distinct: partial factor 0, the package counts one factor
        values.append(len(words) / f)
    return sum(values) / 2


def naive_full_factor(words, threshold=0.72):
    return any(len(set(seq[:k])) / k <= threshold for seq in (words, words[::-1]) for k in range(1, len(words) + 1))


def test_hand_computed_mtld():
    # forwards: "dog dog" completes a factor (TTR 1/2), "cat bird fish cow" is a partial factor of 0 -> 6 / 1
    # backwards: TTR ends at 5/6 without a factor -> 6 / ((1/6) / 0.28) = 10.08
    assert caption_mtld('dog dog cat bird fish cow') == (6, pytest.approx((6 + 10.08) / 2), False)
    # forwards: "a a" and "b b" are factors (TTR 1/2 each), "c d" a partial factor of 0 -> 6 / 2 = 3
    # backwards: "d c b b(3/4) a(4/5) a(4/6 = .67)" is one factor, nothing left -> 6 / 1 = 6
    assert caption_mtld('a a b b c d') == (6, pytest.approx((3 + 6) / 2), False)
    assert naive_mtld('a a b b c d'.split()) == pytest.approx(4.5)


@pytest.mark.parametrize('seed', range(5))
def test_wrapper_equals_naive_mtld_on_random_texts(seed):
    rng = np.random.default_rng(seed)
    vocab = [f'w{chr(97 + i)}' for i in range(12)]
    for _ in range(200):
        words = list(rng.choice(vocab[:rng.integers(2, 13)], size=rng.integers(1, 60)))
        tokens, value, short = caption_mtld(' '.join(words))
        assert tokens == len(words)
        assert value == pytest.approx(naive_mtld(words), rel=1e-12)
        assert short == (not naive_full_factor(words)) == (not has_full_factor(words))


def test_package_behaviour_on_short_captions():
    # no full factor: the token count when all words are distinct, else N (1 - 0.72) / (1 - TTR)
    assert caption_mtld('a dog barks at the bird that sings') == (8, 8.0, True)
    assert caption_mtld('a dog barks at a bird that sings')[1:] == (pytest.approx(8 * 0.28 * 8), True)
    assert caption_mtld('a dog barks at a bird that barks')[1:] == (pytest.approx(8 * 0.28 * 4), True)
    tokens, value, short = caption_mtld('1, 2 -- 3!')
    assert tokens == 0 and math.isnan(value) and short


def test_threshold_is_passed_through():
    words = 'a b a c d e f g'.split()  # TTR 2/3 at the third word: a factor at 0.72, none at 0.6
    assert caption_mtld(' '.join(words), 0.6)[1:] == (pytest.approx(naive_mtld(words, 0.6)), True)
    assert caption_mtld(' '.join(words), 0.72)[2] is False


def test_short_nan_policy_counts_what_it_leaves_out():
    table = pd.DataFrame(dict(source=['h', 'h', 'h'], caption=['dog dog cat bird fish cow', 'a dog barks', '!!']))
    kept, dropped = (mtld_summary(mtld_table(table, short=s, progress=False)).loc['h'] for s in ('keep', 'nan'))
    assert (kept.n, kept.n_short, kept.n_empty, kept.n_used) == (3, 2, 1, 2)
    assert (dropped.n, dropped.n_short, dropped.n_empty, dropped.n_used) == (3, 2, 1, 1)
    assert kept['mean'] == pytest.approx((8.04 + 3) / 2) and dropped['mean'] == pytest.approx(8.04)
    with pytest.raises(ValueError, match="short must be 'keep' or 'nan'"):
        mtld_table(table, short='drop')


@functools.cache
def _scored(path):
    captions = read_caption_sources(path)
    return captions, mtld_table(captions, progress=False)


@pytest.fixture
def clotho_mtld(shared_data):
    "Human and phi-4 captions of Clotho development with their MTLD (computed once per session)."
    return _scored(shared_data / 'clotho_captions' / 'clotho_captions_development_plus_phi4.csv')


def test_human_captions_in_the_phi4_file_are_clotho_development(shared_data, clotho_mtld):
    from laretrieval.clustering import read_caption_csv
    captions, _ = clotho_mtld
    human = read_caption_csv(shared_data / 'clotho_captions' / 'clotho_captions_development.csv')
    mine = captions[captions.source == 'human'].reset_index(drop=True)
    assert mine[['file_name', 'caption_index', 'caption']].equals(human)


def test_thesis_finding_human_mtld_spread_is_wider(clotho_mtld, tmp_path):
    "Thesis fig. 4.5: human captions have a wider MTLD spread than LLM captions. Measured per caption on Clotho development."
    _, scores = clotho_mtld
    summary = mtld_summary(scores)
    print('\nMTLD per caption, Clotho development (lexicalrichness, threshold 0.72):\n' + summary.round(2).to_string())
    test = spread_test(scores, 'human', 'phi-4')
    print(f"Brown-Forsythe: statistic {test['statistic']:.1f}, p = {test['p_value']:.3g}")
    human, phi4 = summary.loc['human'], summary.loc['phi-4']
    assert human.n == phi4.n == 3839 * 5
    assert human.n_empty == phi4.n_empty == 0 and human.n_used == phi4.n_used == 19195
    # the finding holds as measured: wider by std and by IQR, and not by chance
    assert human['std'] > phi4['std'] + 1 and human.iqr > phi4.iqr + 3
    assert test['p_value'] < 1e-10
    assert human['mean'] > phi4['mean'] and human['median'] > phi4['median']
    # ...but nearly every caption is too short for a full MTLD factor (documented in nbs/10_lexical.ipynb)
    assert human.n_short / human.n > 0.95 and phi4.n_short / phi4.n > 0.99
    all_distinct = scores.mtld == scores.tokens  # the package's value when every word is distinct
    share = all_distinct.groupby(scores.source).mean()
    print(f"captions with MTLD = token count: human {share['human']:.1%}, phi-4 {share['phi-4']:.1%}")
    assert share['phi-4'] > share['human'] + 0.15
    fig = plot_mtld(scores, tmp_path / 'mtld_per_caption.png')
    assert (tmp_path / 'mtld_per_caption.png').stat().st_size > 10_000 and len(fig.axes) == 2


def test_per_clip_mtld_reverses_the_direction(clotho_mtld):
    "Each clip's five captions of a source joined (about 57 tokens): phi-4 has the higher and the wider MTLD."
    captions, _ = clotho_mtld
    clips = mtld_table(per_clip(captions), progress=False)
    summary = mtld_summary(clips)
    print('\nMTLD per clip (5 captions joined):\n' + summary.round(2).to_string())
    human, phi4 = summary.loc['human'], summary.loc['phi-4']
    assert human.n == phi4.n == 3839
    assert phi4['std'] > 2 * human['std'] and phi4['mean'] > 1.5 * human['mean']
    assert human.n_short < 0.05 * human.n < phi4.n_short
