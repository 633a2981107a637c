"With `logger='tensorboard'` (and the optional `tensorboard` package installed), training writes TensorBoard scalars (skipped without it)."
import pytest

pytest.importorskip('tensorboard')


@pytest.mark.slow  # trains
def test_training_writes_step_and_epoch_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from laretrieval.config import seed_everything
    from laretrieval.datasets import AudioCaptionDataset, make_builtin_set, split_clips
    from laretrieval.model import build_model
    from laretrieval.objectives import build_loss
    from laretrieval.trackers import close_loggers
    from laretrieval.train import JsonlLog, train
    from tiny import tiny_config
    seed_everything(0)
    cfg = tiny_config(logger='tensorboard')
    clips = make_builtin_set(cfg.builtin_clips, cfg.data_seed, cfg.sample_rate)
    train_set = AudioCaptionDataset(split_clips(clips, 'train'), cfg.sample_rate, 4.0, per_caption=True)
    val_set = AudioCaptionDataset(split_clips(clips, 'val'), cfg.sample_rate, 4.0)
    train(build_model(cfg), build_loss(cfg), train_set, val_set, cfg, progress=False, output_dir=tmp_path)
    close_loggers(tmp_path)  # training leaves the trackers open for the test metrics
    events = sorted((tmp_path / 'tensorboard').rglob('events.out.tfevents.*'))
    assert len(events) == 1
    scalars = EventAccumulator(str(events[0])); scalars.Reload()
    steps = [r for r in JsonlLog(tmp_path / 'log.jsonl').records() if r['kind'] == 'step']
    logged = scalars.Scalars('train/total')
    assert [e.step for e in logged] == [r['step'] for r in steps]
    assert [e.value for e in logged] == pytest.approx([r['total'] for r in steps], rel=1e-6)
    assert len(scalars.Scalars('val/t2a_mAP@10')) == 1


def test_without_logger_tensorboard_nothing_is_written(tmp_path):
    from laretrieval.trackers import make_loggers
    from tiny import tiny_config
    assert make_loggers(tiny_config(), tmp_path) == [] and not (tmp_path / 'tensorboard').exists()
