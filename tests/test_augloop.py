"Augmentation in the training loop: the llm_mix_file round trip and its bad rows, a run on LLM mixes + back-translations, and stages 2 and 3 on top of it."
import json

import pytest
import torch

from laretrieval.augment import AugmentDataset, MixPair, MixedClipDataset, read_caption_table, read_mix_pairs, write_mix_pairs
from laretrieval.build import build_datasets
from laretrieval.config import load_settings
from laretrieval.datasets import split_clips
from laretrieval.rewrite import OfflineBackend, Rewriter, swap_synonyms, write_backtranslation_file, write_llm_mix_file
from laretrieval.sources import corpus_for
from tiny import tiny_config

HEADER = 'mix_id,clip_a,clip_b,snr_db,caption\n'


def test_mix_file_round_trip(tmp_path):
    pairs = [MixPair('mix:a|b|0', 'a', 'b', 7.123456789012345, 'A dog barks, "loudly", while rain falls'),
             MixPair('mix:b|a|0', 'b', 'a', -2.5, 'Rain falls while a dog barks')]
    test = read_mix_pairs(write_mix_pairs(pairs, tmp_path / 'm.csv'))
    assert test == pairs  # quotes, commas and every bit of the SNR survive


@pytest.mark.parametrize('rows, splits, message', [
    ('mix:1,a,b,3,x\nmix:1,b,a,3,y\n', None, 'row 3: mix id'),          # repeated id names the second row and the first
    ('mix:1,a,b,,x\n', None, 'row 2: empty snr_db'),
    ('mix:1,a,b,nan,x\n', None, 'row 2: snr_db is nan'),
    ('mix:1,a,b,3,x\nmix:2,a,a,3,y\n', None, "row 3: clip_a and clip_b are both 'a'"),
    ('mix:1,a,b,3,x,y\n', None, 'row 2: more cells'),
    ('mix:1,a,b,3,x\n', {'a': 'train', 'b': 'val'}, "row 2: clip_b 'b' is a 'val' clip"),
    ('mix:1,a,z,3,x\n', {'a': 'train', 'b': 'train'}, "row 2: clip_b 'z' is no clip of the corpus"),
    ('a,a,b,3,x\n', {'a': 'train', 'b': 'train'}, "row 2: mix id 'a' is a clip id"),
    ('', None, 'no mix pairs'),
])
def test_bad_mix_rows_are_named(tmp_path, rows, splits, message):
    path = tmp_path / 'm.csv'; path.write_text(HEADER + rows)
    with pytest.raises(ValueError, match='m.csv') as e: read_mix_pairs(path, splits)
    assert message in str(e.value)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / 'm.csv'; path.write_text('mix_id,clip_a,clip_b,caption\nmix:1,a,b,x\n')
    with pytest.raises(ValueError, match=r"no column\(s\) \['snr_db'\]"): read_mix_pairs(path)


@pytest.fixture(scope='module')
def augmentation_files(tmp_path_factory):
    "The tiny set's llm_mix_file (2 mixes per training clip) and backtranslation_file, made by the cached offline rewriters."
    d = tmp_path_factory.mktemp('aug')
    cfg = tiny_config()
    train = split_clips(corpus_for(cfg).clips(cfg, load_settings()), 'train')
    mixes, report = write_llm_mix_file(train, Rewriter(OfflineBackend(), 'merge', d / 'merge.jsonl', progress=False), d / 'mixes.csv', per_clip=2, seed=0)
    assert report.ok == 2 * len(train)
    translate = lambda name: Rewriter(OfflineBackend(), 'translate', d / name, progress=False)
    bt, _ = write_backtranslation_file(train, translate('de.jsonl'), translate('en.jsonl'), d / 'bt.csv')
    return mixes, bt, train


def test_build_wires_mixes_and_backtranslations(augmentation_files, tmp_path):
    mixes, bt, train = augmentation_files
    cfg = tiny_config(llm_mix_file=str(mixes), mix_p=0.5, backtranslation_file=str(bt), epochs=3)
    splits = build_datasets(cfg)
    ds = splits.train
    assert isinstance(ds, AugmentDataset) and len(ds.mix_pairs) == 2 * len(train)
    table = read_caption_table(bt)
    # the back-translations are the synonym-swapped captions (the offline backend's rule) and every one is trained on
    expected = {c.clip_id: [swap_synonyms(t) for t in c.captions if swap_synonyms(t) not in c.captions] for c in train}
    assert table == {k: list(dict.fromkeys(v)) for k, v in expected.items() if v}
    by_id = {c.clip_id: c for c in ds.base.clips}
    assert all(set(v) <= set(by_id[k].captions) for k, v in table.items())
    assert any(n.startswith(f'backtranslation_file: {sum(map(len, table.values()))} added') for n in splits.notes)
    # the noted per-epoch counts are the items that read back as mixes
    counts = []
    for epoch in range(cfg.epochs):
        ds.set_epoch(epoch)
        counts.append(sum(ds[i]['clip_id'].startswith('mix:') for i in range(len(ds))))
    assert 0 < sum(counts) < cfg.epochs * len(ds)  # mix_p=0.5: some items, not all
    assert f'epoch 0 draws {counts[0]} of its {len(ds)} items as mixes (expected: mix_p x {len(ds)} items of clips with mixes = {0.5 * len(ds):.1f})' in ' '.join(splits.notes)
    assert [len(ds.mixed_items(epoch)) for epoch in range(cfg.epochs)] == counts


def test_build_refuses_inconsistent_mix_settings(augmentation_files, tmp_path):
    mixes, _, _ = augmentation_files
    with pytest.raises(ValueError, match='needs llm_mix_file'): build_datasets(tiny_config(mix_p=0.5))
    control = build_datasets(tiny_config(llm_mix_file=str(mixes)))  # mix_p=0: an ablation's control arm, the file noted as unused
    assert not isinstance(control.train, AugmentDataset) and f'LLM mix: {mixes} not used (mix_p=0)' in control.notes
    cfg = tiny_config()
    val = split_clips(corpus_for(cfg).clips(cfg, load_settings()), 'val')[0].clip_id
    bad = tmp_path / 'bad.csv'; bad.write_text(mixes.read_text() + f'mix:new,{val},{val}x,1.0,a caption\n')
    with pytest.raises(ValueError, match=f"bad.csv, row {len(mixes.read_text().splitlines()) + 1}: clip_a '{val}' is a 'val' clip"):
        build_datasets(tiny_config(llm_mix_file=str(bad), mix_p=0.5))


@pytest.mark.slow
def test_run_on_mixes_then_stages_2_and_3(augmentation_files, tmp_path, monkeypatch):
    "A run trains on LLM mixes and back-translations; teachers and cluster labels built from it cover the mixes; stages 2+3 train on them."
    from laretrieval.hub import load_run
    from laretrieval.pipeline import _per_clip, cluster_training_captions, ensemble_runs, run_training
    from laretrieval.teachers import TeacherTargets
    from laretrieval.train import TrainingStep
    torch.set_num_threads(1)
    mixes, bt, _ = augmentation_files
    seen = []
    forward = TrainingStep.forward
    def recording(self, waveforms, lengths, captions, clip_ids):
        seen.extend(clip_ids); return forward(self, waveforms, lengths, captions, clip_ids)
    monkeypatch.setattr(TrainingStep, 'forward', recording)
    aug = dict(llm_mix_file=str(mixes), mix_p=0.5, backtranslation_file=str(bt), epochs=2)
    metrics = run_training(tiny_config(**aug), tmp_path / 'stage1', progress=False)
    noted = [n for n in metrics['data_notes'] if 'epoch 0 draws' in n]
    assert len(noted) == 1
    mixed_seen = [c for c in seen if c.startswith('mix:')]
    pair_ids = {m.clip_id for m in read_mix_pairs(mixes)}
    assert mixed_seen and set(mixed_seen) <= pair_ids  # mixes reached the training step
    print(f'stage 1: {len(mixed_seen)} of {len(seen)} trained items were LLM mixes; {noted[0]}')

    # stage 2's teacher and stage 3's labels from the stage-1 model, on the training view with the mixes appended
    model, cfg = load_run(tmp_path / 'stage1')
    run_training(tiny_config(**aug, seed=1), tmp_path / 'stage1_seed1', progress=False)
    ensemble = ensemble_runs([tmp_path / 'stage1', tmp_path / 'stage1_seed1'], tmp_path / 'ensemble', teacher=True, progress=False)
    view = _per_clip(build_datasets(cfg).train)
    assert isinstance(view, MixedClipDataset) and pair_ids <= {c.clip_id for c in view.clips}
    single = TeacherTargets.from_models([model], view)  # one model's teacher, and the ensemble's (laretrieval ensemble --teacher)
    teacher = TeacherTargets.load(ensemble['teacher'])
    assert teacher.clip_ids == single.clip_ids and pair_ids <= set(teacher.clip_ids)
    assert set(read_mix_pairs(mixes)[i].caption for i in range(5)) <= set(teacher.caption_texts)
    labels = cluster_training_captions(cfg, 3, tmp_path / 'clusters.csv', progress=False)
    mix = read_mix_pairs(mixes)[0]
    assert teacher.targets([mix.caption], [mix.clip_id]).shape == (1, 1)
    from laretrieval.clustering import load_cluster_labels
    assert (mix.clip_id, mix.caption) in load_cluster_labels(labels)

    seen.clear()
    stage2 = run_training(tiny_config(**aug, teachers=ensemble['teacher'], cluster_labels=str(labels)), tmp_path / 'stage2', progress=False)
    steps = [json.loads(line) for line in (tmp_path / 'stage2' / 'log.jsonl').read_text().splitlines()]
    steps = [s for s in steps if s['kind'] == 'step']
    assert steps and all(torch.isfinite(torch.tensor([s['distillation'], s['cluster']])).all() for s in steps)
    assert any(c.startswith('mix:') for c in seen)  # the distilled batches held mixes
    print(f"stage 2+3: {sum(c.startswith('mix:') for c in seen)} mixed items distilled and clustered; test {stage2['test']}")


def test_augment_command_writes_the_files_and_reuses_its_cache(augmentation_files, tmp_path, capsys):
    from laretrieval.cli import main
    mixes, bt, _ = augmentation_files
    args = ['augment', '--set', 'builtin_clips=40', '--llm-mix', str(tmp_path / 'm.csv'), '--backtranslation', str(tmp_path / 'bt.csv'),
            '--cache-dir', str(tmp_path / 'cache'), '--per-clip', '2']
    assert main(args) == 0
    # the same pairs and captions as the functions wrote with their own caches (the offline rules are deterministic)
    assert read_mix_pairs(tmp_path / 'm.csv') == read_mix_pairs(mixes)
    assert read_caption_table(tmp_path / 'bt.csv') == read_caption_table(bt)
    assert main(args) == 0
    assert '56 mixes of 28 training clips (56 from the cache' in capsys.readouterr().out
    assert main(['augment', '--set', 'builtin_clips=40', '--cache-dir', str(tmp_path)]) == 2
