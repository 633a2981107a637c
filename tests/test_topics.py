"BERTopic topics of captions (clustering.topics): recovery of obvious themes, every outlier given a cluster, determinism, the labels file, a run on real Clotho captions."
import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from laretrieval.clustering import OUTLIER_MODES, embed_captions, load_cluster_labels, read_caption_csv, topics, write_cluster_labels
from laretrieval.encoders import TextEncoder

THEMES = {  # one sound each, said 3 ways (a distinct wording, e.g. 'church bell', can be a topic of its own); 3 templates x 4 adjectives x 5 places = 60 variants per theme, 30 of them drawn
    'bird': ['a {} bird sings {}', 'a {} bird is singing {}', 'a {} bird chirps and sings {}'],
    'water': ['{} water flows {}', '{} water is flowing {}', '{} water splashes and flows {}'],
    'bell': ['a {} bell rings {}', 'a {} bell is ringing {}', 'a {} bell chimes and rings {}'],
}
ADJECTIVES, PLACES = ['tiny', 'big', 'loud', 'soft'], ['outside', 'in the garden', 'close by', 'in the distance', 'in the morning']
SOURCES = ['a dog barks', 'rain falls', 'an engine idles', 'birds chirp', 'a bell rings', 'people talk', 'water drips',
           'wind blows', 'a door slams', 'a baby cries', 'music plays', 'footsteps approach']


@pytest.fixture(scope='module')
def minilm():
    return TextEncoder('minilm', pooling='mean').eval()


@pytest.fixture(scope='module')
def themed(minilm):
    "90 captions, 30 per theme; the table, its vectors and the true theme of each caption."
    rng = np.random.default_rng(1)
    captions = []
    for templates in THEMES.values():
        combos = list(itertools.product(templates, ADJECTIVES, PLACES))
        captions += [t.format(a, p) for t, a, p in (combos[i] for i in rng.choice(len(combos), 30, replace=False))]
    table = pd.DataFrame(dict(file_name=[f'clip{i // 3}.wav' for i in range(90)], caption_index=[1 + i % 3 for i in range(90)], caption=captions))
    return table, embed_captions(captions, minilm, progress=False), np.repeat(np.arange(3), 30)


@pytest.fixture(scope='module')
def mixtures(minilm):
    "Twelve sources alone and 60 of their pairs: a continuum, where HDBSCAN leaves outliers."
    pairs = [f'{a} while {b}' for a, b in itertools.permutations(SOURCES, 2)]
    captions = SOURCES + [pairs[i] for i in np.random.default_rng(0).choice(len(pairs), 60, replace=False)]
    table = pd.DataFrame(dict(file_name=[f'mix{i}.wav' for i in range(len(captions))], caption_index=1, caption=captions))
    return table, embed_captions(captions, minilm, progress=False)


@pytest.mark.slow  # UMAP compiles its numba code on the first fit (10-25 s)
def test_topics_recover_three_themes(themed):
    table, vectors, truth = themed
    result = topics(table, embeddings=vectors, progress=False)
    assert result.n_clusters == 3 and result.outlier_cluster is None
    assert adjusted_rand_score(truth, result.table.cluster) == 1.0
    assert result.outliers == {'outliers': 0, 'by embeddings': 0, 'by nearest centroid': 0}
    assert result.sizes().tolist() == [30, 30, 30]
    for c in range(3):  # each topic's first c-TF-IDF words name its theme
        theme = list(THEMES)[truth[result.table.cluster.to_numpy() == c][0]]
        assert theme in result.words[c][:2], (theme, result.words[c])
    summary = result.summary(n_words=4, n_typical=2)
    assert summary['size'].tolist() == [30, 30, 30] and summary.top_words[0] == ', '.join(result.words[0][:4])
    assert all(set(row.typical) <= set(result.table.caption[result.table.cluster == c]) for c, row in summary.iterrows())
    assert result.table[['file_name', 'caption_index', 'caption']].equals(table)


@pytest.mark.slow
def test_same_seed_same_topics(mixtures):
    table, vectors = mixtures
    first, again = (topics(table, outliers='own', seed=3, embeddings=vectors, progress=False) for _ in range(2))
    np.testing.assert_array_equal(first.table.cluster, again.table.cluster)
    assert first.words == again.words and first.outliers == again.outliers
    np.testing.assert_array_equal(first.centroids, again.centroids)


@pytest.mark.slow
def test_every_outlier_gets_a_cluster(mixtures):
    table, vectors = mixtures
    by_mode = {mode: topics(table, outliers=mode, embeddings=vectors, progress=False) for mode in OUTLIER_MODES}
    own = by_mode['own']
    n_out = own.outliers['outliers']
    assert n_out >= 10, own.outliers  # the pairs sit between topics: HDBSCAN leaves many out
    assert own.outlier_cluster == own.n_clusters - 1 and own.outliers['own cluster'] == n_out
    assert own.sizes()[-1] == n_out and own.words[own.outlier_cluster]  # the outliers' cluster has c-TF-IDF words of its own
    in_topics = own.table.cluster != own.outlier_cluster
    for mode, result in by_mode.items():
        labels = result.table.cluster
        assert len(labels) == len(table) and labels.between(0, result.n_clusters - 1).all(), mode
        assert (result.sizes() > 0).all(), mode
        assert result.outliers['outliers'] == n_out
        assert sum(v for k, v in result.outliers.items() if k != 'outliers') == n_out, result.outliers
        assert labels[in_topics].tolist() == own.table.cluster[in_topics].tolist(), mode  # topic members keep their topic
    for mode in ('embeddings', 'c-tf-idf'):
        assert by_mode[mode].n_clusters == own.n_clusters - 1 and by_mode[mode].outlier_cluster is None
        assert by_mode[mode].outliers[f'by {mode}'] > 0
    # 'embeddings': an outlier goes to the topic whose mean vector (BERTopic's topic embedding) is closest in cosine
    reduced, out = by_mode['embeddings'].table.cluster.to_numpy(), ~in_topics.to_numpy()
    topic_means = np.stack([vectors[in_topics.to_numpy() & (own.table.cluster.to_numpy() == c)].mean(0) for c in range(own.n_clusters - 1)])
    normed = topic_means / np.linalg.norm(topic_means, axis=1, keepdims=True)
    np.testing.assert_array_equal(reduced[out], np.argmax(vectors[out] @ normed.T, axis=1))


@pytest.mark.slow
def test_no_topic_found_is_an_error_naming_min_topic_size(mixtures):
    table, vectors = mixtures
    with pytest.raises(ValueError, match=r"HDBSCAN found no topic in 72 distinct captions; lower min_topic_size \(now 60\)"):
        topics(table, min_topic_size=60, embeddings=vectors, progress=False)

@pytest.mark.slow
def test_nr_topics_merges_whole_themes(themed):
    table, vectors, truth = themed
    merged = topics(table, nr_topics=2, embeddings=vectors, progress=False)
    assert merged.n_clusters == 2 and sorted(merged.sizes().tolist()) == [30, 60]
    for theme in range(3):  # a theme is merged whole, never split
        assert len(set(merged.table.cluster[truth == theme])) == 1


@pytest.mark.slow
def test_labels_file_round_trips_with_repeated_captions(themed, tmp_path):
    table, vectors, _ = themed
    # the same caption text in a second clip (as Clotho has): fitted once, one topic for both
    repeated = pd.concat([table, table.iloc[[0, 45]].assign(file_name=['other0.wav', 'other1.wav'])], ignore_index=True)
    result = topics(repeated, embeddings=np.concatenate([vectors, vectors[[0, 45]]]), progress=False)
    assert result.table.cluster.iloc[90] == result.table.cluster.iloc[0] and result.table.cluster.iloc[91] == result.table.cluster.iloc[45]
    labels = load_cluster_labels(write_cluster_labels(result.table, tmp_path / 'topics.csv'))
    assert labels == {(f, c): k for f, c, k in zip(repeated.file_name, repeated.caption, result.table.cluster)}
    assert len(labels) == 92 and set(labels.values()) == {0, 1, 2}


def test_bad_arguments_name_the_parameter():
    captions = [f'caption number {i}' for i in range(20)]
    table = pd.DataFrame(dict(file_name=[f'c{i}.wav' for i in range(20)], caption_index=1, caption=captions))
    vectors = np.eye(20, 8, dtype=np.float32)
    with pytest.raises(ValueError, match=r"outliers must be one of \('embeddings', 'c-tf-idf', 'own'\), got 'drop'"):
        topics(table, outliers='drop', embeddings=vectors)
    with pytest.raises(ValueError, match='min_topic_size must be an integer ≥ 2'):
        topics(table, min_topic_size=1, embeddings=vectors)
    with pytest.raises(ValueError, match=r"min_topic_size \(21\) exceeds the 20 distinct captions"):
        topics(table, min_topic_size=21, embeddings=vectors)
    with pytest.raises(ValueError, match="nr_topics must be None, 'auto' or an integer ≥ 1, got 0"):
        topics(table, nr_topics=0, embeddings=vectors)
    with pytest.raises(ValueError, match=r"embeddings has shape \(3, 8\); the table's 20 captions need \(20, H\)"):
        topics(table, embeddings=vectors[:3])
    with pytest.raises(ValueError, match="table has 15 distinct captions; topics needs more than 15"):
        topics(pd.concat([table.head(15), table.head(5)]), embeddings=vectors)
    with pytest.raises(ValueError, match=r"caption table lacks column\(s\) \['caption_index'\]"):
        topics(table.drop(columns='caption_index'), embeddings=vectors)


@pytest.mark.slow  # embeds 2000 real Clotho captions and fits BERTopic
def test_real_clotho_captions_into_topics(shared_data, minilm, tmp_path):
    captions = read_caption_csv(shared_data / 'clotho_captions' / 'clotho_captions_development.csv').sample(2000, random_state=0)
    result = topics(captions, encoder=minilm, progress=False)
    summary = result.summary(n_words=5, n_typical=1)
    print(result.outliers, '\n', summary.to_string())
    assert 10 <= result.n_clusters <= 100, result.n_clusters  # HDBSCAN decides; Clotho's captions give tens of topics per 2000
    assert result.outliers['outliers'] > 100  # a continuum of mixtures: a good part are outliers at first...
    assert result.outliers['by embeddings'] == result.outliers['outliers']  # ... and every one is put in a topic
    assert (result.sizes() > 0).all() and result.sizes().sum() == 2000
    assert {'rain', 'water', 'birds', 'dog', 'car', 'people'} & {w for c in range(result.n_clusters) for w in result.words[c][:2]}
    labels = load_cluster_labels(write_cluster_labels(result.table, tmp_path / 'clotho_topics.csv'))
    assert len(labels) == len(set(zip(captions.file_name, captions.caption))) and set(labels.values()) == set(range(result.n_clusters))


@pytest.mark.slow  # builds the built-in set and fits BERTopic through the command line
def test_clusters_command_writes_topic_labels(tmp_path, capsys):
    from laretrieval import cli
    from laretrieval.config import ExperimentConfig
    from laretrieval.pipeline import build_datasets
    out = tmp_path / 'topics.csv'
    args = ['clusters', '--set', 'builtin_clips=40', '--output', str(out)]
    assert cli.main([*args, '--method', 'bertopic', '--min-topic-size', '5', '--outliers', 'own']) == 0
    printed = capsys.readouterr().out
    assert f'wrote {out}' in printed and 'clusters from BERTopic; outliers: ' in printed, printed
    labels = load_cluster_labels(out)
    clips = build_datasets(ExperimentConfig(builtin_clips=40)).train.clips
    assert set(labels) == {(c.clip_id, t) for c in clips for t in c.captions}  # every training caption, as training reads it
    assert min(labels.values()) == 0 and len(set(labels.values())) >= 2
    for extra, message in ((['--min-topic-size', '5'], '--min-topic-size apply to --method bertopic only'), ([], '--method kmeans needs --n-clusters'),
                           (['--method', 'bertopic', '--n-clusters', '3'], 'no --n-clusters')):
        if '--method' not in extra and extra: extra = [*extra, '--n-clusters', '3']
        assert cli.main([*args, *extra]) == 2
        assert message in capsys.readouterr().err
