"k-fold members: the folds partition development + validation by clip (and recording), depend on data_seed alone, leave the test split as it is; a fold grid trains through run_grid and its members ensemble on the shared test split."
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from laretrieval.build import build_datasets
from laretrieval.config import ExperimentConfig
from laretrieval.datasets import Clip
from laretrieval.kfold import assign_folds, kfold_splits
from laretrieval.sources import ESC50Corpus
from tiny import TINY, tiny_config

SHARED_ESC50 = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'esc50'
if not SHARED_ESC50.exists(): SHARED_ESC50 = Path('/work/shared/data/esc50')


def ids(dataset)->set:
    "The clip ids of a per-clip dataset."
    return {c.clip_id for c in dataset.clips}


def test_folds_partition_development_and_validation():
    "Over fold = 0..k-1 the validation clips are disjoint and cover train + val of the corpus's own split; each fold trains on the rest; test unchanged."
    own = build_datasets(tiny_config())
    merged, test = ids(own.val) | {c.clip_id for c in own.train.clips}, ids(own.test)
    vals = []
    for fold in range(5):
        splits = build_datasets(tiny_config(kfold=5, fold=fold))
        val, train = ids(splits.val), {c.clip_id for c in splits.train.clips}
        assert not val & train and val | train == merged
        assert ids(splits.test) == test and [c.captions for c in splits.test.clips] == [c.captions for c in own.test.clips]
        assert any(f'fold {fold} validates ({len(val)} clips)' in n for n in splits.notes)
        vals.append(val)
    assert sum(map(len, vals)) == len(merged) and set().union(*vals) == merged  # no clip in two folds, none left out
    assert max(map(len, vals)) - min(map(len, vals)) <= 1


def test_folds_depend_on_data_seed_only():
    "Another training seed gives the same folds; another data_seed other folds (same clips)."
    clips = [Clip(f'c{i:03d}', ['a caption'], 'train' if i % 3 else 'val') for i in range(60)]
    base = assign_folds(clips, 5, seed=0)
    assert assign_folds(list(reversed(clips)), 5, seed=0) == base
    assert assign_folds(clips, 5, seed=1) != base
    val = lambda cfg: ids(build_datasets(cfg).val)
    assert val(tiny_config(kfold=5, fold=1, seed=0)) == val(tiny_config(kfold=5, fold=1, seed=7))


def test_captions_of_a_clip_stay_in_its_fold():
    "Every caption of a clip trains or validates with it (the split is by clip, not by caption)."
    splits = build_datasets(tiny_config(kfold=4, fold=3, train_items='caption'))
    train_clips = splits.train.clips
    assert not {c.clip_id for c in train_clips} & ids(splits.val)
    assert len(splits.train) == sum(len(c.captions) for c in train_clips)  # a training item per caption of the training clips
    assert all(len(c.captions) == 5 for c in train_clips + splits.val.clips)  # no clip's captions split between the two


def test_recordings_share_a_fold():
    "A group function keeps its groups whole; ESC-50's takes of one Freesound recording share a fold."
    clips = [Clip(f'1-{rec}-{take}-0.wav', ['the sound of a dog'], 'train') for rec in range(20) for take in 'ABC'[:1 + rec % 3]]
    folds = assign_folds(clips, 4, seed=0, group=ESC50Corpus().fold_group)
    by_recording = {}
    for c in clips: by_recording.setdefault(c.clip_id.split('-')[1], set()).add(folds[c.clip_id])
    assert all(len(f) == 1 for f in by_recording.values())
    assert ESC50Corpus().fold_group(Clip('odd.wav', [], 'train')) == 'odd.wav'


@pytest.mark.skipif(not SHARED_ESC50.exists(), reason='ESC-50 not in shared/data')
def test_esc50_keeps_its_test_fold():
    "ESC-50 with kfold: the test fold is the corpus's own; folds 1-3 (train + the 15% that validated) are cut into k folds."
    cfg = dict(dataset='esc50', data_dir=str(SHARED_ESC50), positives='caption', esc50_test_fold=4)
    own = build_datasets(ExperimentConfig(**cfg))
    splits = build_datasets(ExperimentConfig(**cfg, kfold=3, fold=0))
    assert ids(splits.test) == ids(own.test) and {c.meta['fold'] for c in splits.test.clips} == {4}
    assert ids(splits.val) | {c.clip_id for c in splits.train.clips} == ids(own.val) | {c.clip_id for c in own.train.clips}
    assert 0.3 < len(splits.val) / (len(splits.val) + len(splits.train)) < 0.37


def test_kfold_splits_does_not_modify_its_input():
    clips = [Clip(f'c{i}', ['x'], ('train', 'val', 'test')[i % 3]) for i in range(12)]
    out, _ = kfold_splits(clips, 2, 1, seed=0)
    assert [c.split for c in clips] == [('train', 'val', 'test')[i % 3] for i in range(12)]
    assert Counter(c.split for c in out) == Counter(train=4, val=4, test=4)


@pytest.mark.parametrize('params, message', [(dict(kfold=1), 'at least 2'), (dict(kfold=5, fold=5), 'one of 0..4'),
                                             (dict(fold=1), 'fold needs kfold >= 2'), (dict(kfold=3, fold=-1), 'fold')])
def test_config_refuses_inconsistent_folds(params, message):
    with pytest.raises(ValueError, match=message): ExperimentConfig(**params)


@pytest.mark.slow
def test_fold_grid_and_the_ensemble_of_its_members(tmp_path):
    "`fold` as a grid axis of run_grid trains one member per fold; ensemble_runs averages them on the shared test split (equal weights), refuses a teacher and a member of other data."
    from laretrieval.ablate import run_grid
    from laretrieval.ensemble import combine_similarities, model_similarities
    from laretrieval.hub import load_run
    from laretrieval.metrics import evaluate_retrieval
    from laretrieval.pipeline import ensemble_runs, run_training
    torch.set_num_threads(1)
    results = run_grid({**TINY, 'eval_batch_size': 32, 'kfold': 3, 'fold': [0, 1, 2]}, tmp_path / 'batch', progress=False)
    assert list(results['status']) == ['done'] * 3 and sorted(results['fold']) == [0, 1, 2]
    runs = sorted((tmp_path / 'batch' / 'runs').iterdir())
    assert sorted(json.loads((r / 'config.json').read_text())['fold'] for r in runs) == [0, 1, 2]
    ens = ensemble_runs(runs, tmp_path / 'ensemble', progress=False)
    assert ens['weights'] == [pytest.approx(1 / 3)] * 3 and ens['val_value'] is None
    # the same number from the members' test similarities, combined by hand
    members = [load_run(r) for r in runs]
    test = build_datasets(members[0][1]).test
    sims = [model_similarities([m], test, 32, 'cpu', cfg.positives)[0][0] for m, cfg in members]
    _, text_keys, audio_keys = model_similarities([members[0][0]], test, 32, 'cpu', members[0][1].positives)
    expected = evaluate_retrieval(combine_similarities(sims), text_keys, audio_keys, members[0][1].map_ks, members[0][1].recall_ks)
    assert ens['test']['ensemble']['t2a'] == pytest.approx(expected['t2a']) and ens['test']['ensemble']['a2t'] == pytest.approx(expected['a2t'])
    with pytest.raises(ValueError, match='train on different ones'): ensemble_runs(runs, tmp_path / 'teacher', teacher=True, progress=False)
    own = tmp_path / 'own-splits'
    run_training(tiny_config(eval_batch_size=32), own, progress=False)
    with pytest.raises(ValueError, match='kfold differ'): ensemble_runs([runs[0], own], tmp_path / 'mixed', progress=False)


def test_fold_is_a_grid_axis():
    "`fold: [0..k-1]` expands to one point per fold (distinct run ids and arms); a fold outside 0..k-1 is refused before any run starts."
    from laretrieval.ablate import expand_grid, grid_points
    points = grid_points({'kfold': 5, 'fold': [0, 1, 2, 3, 4]})
    assert [p['fold'] for p, _, _ in points] == [0, 1, 2, 3, 4]
    assert len({run_id for _, run_id, _ in points}) == 5 and [arm for _, _, arm in points] == [f'fold={f}' for f in range(5)]
    with pytest.raises(ValueError, match='one of 0..4'): expand_grid({'kfold': 5, 'fold': [3, 4, 5]})
