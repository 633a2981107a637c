"Caption clustering: recovery of obvious groups, determinism, the labels file, and a run on real Clotho captions."
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from laretrieval.clustering import (cluster_captions, cluster_embeddings, embed_captions, load_cluster_labels,
                                    plot_cluster_sizes, read_caption_csv, write_cluster_labels)
from laretrieval.encoders import TextEncoder

GROUPS = {
    'dogs': ['a dog barks loudly', 'a small puppy whines and yelps', 'two dogs bark at each other', 'a dog growls then barks',
             'a large dog is barking in the yard', 'dogs howl and bark in the distance'],
    'rain': ['rain falls on a tin roof', 'heavy rain pours down outside', 'raindrops patter against the window',
             'a steady rainfall during a storm', 'light rain drizzles on the leaves', 'rain is pouring onto the pavement'],
    'engines': ['a car engine idles', 'a motor revs up loudly', 'an engine starts and keeps running', 'a truck engine rumbles',
                'a motorcycle engine roars as it accelerates', 'a diesel engine hums steadily'],
}


@pytest.fixture(scope='module')
def minilm():
    return TextEncoder('minilm', pooling='mean').eval()


@pytest.fixture(scope='module')
def synthetic():
    captions = [c for cs in GROUPS.values() for c in cs]
    truth = np.repeat(np.arange(len(GROUPS)), [len(cs) for cs in GROUPS.values()])
    table = pd.DataFrame(dict(file_name=[f'clip{i // 2}.wav' for i in range(len(captions))],
                              caption_index=[1 + i % 2 for i in range(len(captions))], caption=captions))
    return table, truth


def test_clusters_recover_obvious_groups(minilm, synthetic):
    table, truth = synthetic
    clusters = cluster_captions(table, 3, seed=0, encoder=minilm, progress=False)
    assert adjusted_rand_score(truth, clusters.table.cluster) == pytest.approx(1.0)
    summary = clusters.summary(n_words=4, n_typical=2)
    assert summary['size'].tolist() == [6, 6, 6]
    # each cluster's words and typical captions come from its own group
    for c, row in summary.iterrows():
        group = list(GROUPS)[truth[clusters.table.cluster.to_numpy() == c][0]]
        assert all(t in GROUPS[group] for t in row.typical)
    words = ' '.join(summary.top_words)
    assert 'engine' in words and 'rain' in words and ('dog' in words or 'dogs' in words), summary


@pytest.mark.slow  # embeds and clusters twice
def test_same_seed_same_clusters(minilm, synthetic):
    table, _ = synthetic
    first = embed_captions(table.caption, minilm, batch_size=5, progress=False)
    again = embed_captions(table.caption, minilm, batch_size=7, progress=False)
    np.testing.assert_allclose(first, again, atol=1e-5)  # batching does not change a caption's vector
    rng = np.random.default_rng(0)
    noisy = first + rng.normal(scale=0.05, size=first.shape).astype(np.float32)  # less obvious groups
    for minibatch in (False, True):
        a_labels, a_centres = cluster_embeddings(noisy, 5, seed=3, minibatch=minibatch)
        b_labels, b_centres = cluster_embeddings(noisy, 5, seed=3, minibatch=minibatch)
        np.testing.assert_array_equal(a_labels, b_labels)
        np.testing.assert_array_equal(a_centres, b_centres)
        np.testing.assert_allclose(np.linalg.norm(a_centres, axis=1), 1, atol=1e-6)


def test_too_many_clusters_is_an_error():
    with pytest.raises(ValueError, match='n_clusters must be in 1..4'):
        cluster_embeddings(np.eye(4, dtype=np.float32), 5)


def test_labels_file_round_trips(tmp_path):
    table = pd.DataFrame(dict(file_name=['a.wav', 'a.wav', 'b.wav'], caption_index=[1, 2, 1],
                              caption=['a dog barks, twice', 'a "quoted" dog', 'rain falls'], cluster=[0, 0, 7]))
    path = write_cluster_labels(table, tmp_path / 'sub' / 'labels.csv')
    assert load_cluster_labels(path) == {('a.wav', 'a dog barks, twice'): 0, ('a.wav', 'a "quoted" dog'): 0, ('b.wav', 'rain falls'): 7}
    assert sorted(p.name for p in path.parent.iterdir()) == ['labels.csv']  # no temporary file left
    pd.testing.assert_frame_equal(pd.read_csv(path), table)


class Unprintable:
    def __str__(self): raise RuntimeError('cannot format this caption')


def test_failed_write_keeps_the_old_labels_file(tmp_path):
    good = pd.DataFrame(dict(file_name=['a.wav'], caption_index=[1], caption=['a dog'], cluster=[2]))
    path = write_cluster_labels(good, tmp_path / 'labels.csv')
    broken = pd.DataFrame(dict(file_name=['a.wav', 'b.wav'], caption_index=[1, 1], caption=['rain', Unprintable()], cluster=[0, 1]))
    with pytest.raises(RuntimeError, match='cannot format'):
        write_cluster_labels(broken, path)  # fails while writing
    assert load_cluster_labels(path) == {('a.wav', 'a dog'): 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['labels.csv']
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['cluster'\]"):
        write_cluster_labels(good.drop(columns='cluster'), path)


@pytest.mark.parametrize('text, message', [
    ('file_name,caption_index,caption\na.wav,1,a dog\n', r"missing column\(s\) \['cluster'\]"),
    ('file_name,caption_index,caption,cluster\na.wav,1,a dog,0\nb.wav,1,rain,1.5\n', r"data row 2 \('b.wav'\): cluster '1.5' is not"),
    ('file_name,caption_index,caption,cluster\na.wav,1,a dog,0\nb.wav,1,rain,\n', r"data row 2 \('b.wav'\): cluster '' is not"),
    ('file_name,caption_index,caption,cluster\na.wav,x,a dog,0\n', r"data row 1 \('a.wav'\): caption_index 'x' is not"),
    ('file_name,caption_index,caption,cluster\na.wav,1,a dog,0\na.wav,2,a dog,3\n', r"data row 2 \('a.wav'\): caption 'a dog' was given cluster 0 in data row 1"),
    ('file_name,caption_index,caption,cluster\na.wav,1,,0\n', r"data row 1 \('a.wav'\): empty file_name or caption"),
])
def test_bad_labels_file_names_the_row(tmp_path, text, message):
    path = tmp_path / 'labels.csv'
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_cluster_labels(path)


@pytest.mark.slow  # embeds and clusters 2000 real Clotho captions
def test_real_clotho_captions_into_20_clusters(shared_data, minilm, tmp_path):
    captions = read_caption_csv(shared_data / 'clotho_captions' / 'clotho_captions_development.csv')
    assert len(captions) == 3839 * 5
    subset = captions.sample(2000, random_state=0)
    clusters = cluster_captions(subset, 20, seed=0, encoder=minilm, progress=False)
    sizes = clusters.sizes()
    assert sizes.sum() == 2000 and (sizes > 0).all() and len(sizes) == 20
    summary = clusters.summary(n_words=8, n_typical=3)
    print(summary.to_string())
    for c, row in summary.iterrows():
        words = row.top_words.split(', ')
        assert len(words) == 8 and all(w.isalpha() for w in words), (c, words)
        members = set(clusters.table.caption[clusters.table.cluster == c])
        assert len(row.typical) == 3 and set(row.typical) <= members
    # the clusters are topics: at least some clusters are named by words that say what is heard
    assert {'rain', 'water', 'birds', 'car', 'people'} & set(' '.join(summary.top_words).replace(',', '').split())
    labels = load_cluster_labels(write_cluster_labels(clusters.table, tmp_path / 'clotho_clusters.csv'))
    assert len(labels) == len(set(zip(subset.file_name, subset.caption)))
    assert set(labels.values()) == set(range(20))
    fig = plot_cluster_sizes(sizes, tmp_path / 'sizes.png', {c: row.top_words.split(', ') for c, row in summary.iterrows()})
    assert (tmp_path / 'sizes.png').stat().st_size > 1000
    largest = int(np.argmax(sizes))  # the top bar is the largest cluster, named by its first three words
    top_label = fig.axes[0].get_yticklabels()[0].get_text()
    assert top_label == f"{largest}: {', '.join(summary.top_words[largest].split(', ')[:3])}"
