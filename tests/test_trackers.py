"The `logger` parameter: a tiny run's step losses, validation and test metrics and config read back from CSV, MLflow, offline W&B (and TensorBoard when installed); the ablation table in MLflow and W&B; unknown names and missing packages."
import importlib.util, json, subprocess, sys

import numpy as np
import pandas as pd
import pytest

from laretrieval.config import ExperimentConfig, TRACKERS
from laretrieval.trackers import make_loggers, tracker_names
from tiny import TINY, offline_env, set_args, tiny, tiny_config

HAS_TENSORBOARD = importlib.util.find_spec('tensorboard') is not None


def test_unknown_tracker_names_the_parameter_and_the_choices():
    with pytest.raises(ValueError, match=r"parameter 'logger' is 'csv,neptune': unknown tracker\(s\) 'neptune'") as e:
        ExperimentConfig(logger='csv,neptune')
    assert all(name in str(e.value) for name in TRACKERS)
    assert tracker_names(' jsonl, mlflow ,csv,mlflow') == ['mlflow', 'csv']
    assert ExperimentConfig(logger='').logger == ''  # the JSONL log only, like 'jsonl'


@pytest.mark.parametrize('name', ['wandb', 'mlflow', 'tensorboard'])
def test_a_missing_tracker_package_says_how_to_install_it(name, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError, as when it is not installed
    with pytest.raises(ImportError, match=rf"logger='{name}' needs the optional package '{name}'.*pip install \"laretrieval\[tracking\]\""):
        make_loggers(tiny_config(logger=f'csv,{name}'), tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


def test_jsonl_alone_makes_no_loggers(tmp_path):
    assert make_loggers(tiny_config(), tmp_path) == [] and make_loggers(tiny_config(logger='csv'), None) == []


@pytest.fixture
def offline_trackers(monkeypatch):
    "W&B offline, MLflow in its default local store (beside the run folder)."
    monkeypatch.setenv('WANDB_MODE', 'offline'); monkeypatch.setenv('WANDB_SILENT', 'true')
    for name in ('MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_NAME', 'WANDB_PROJECT'): monkeypatch.delenv(name, raising=False)
    pytest.importorskip('wandb'); pytest.importorskip('mlflow')


@pytest.mark.slow  # trains
def test_a_tiny_run_reaches_every_tracker(tmp_path, offline_trackers):
    from mlflow.tracking import MlflowClient
    from laretrieval.checkpoints import JsonlLog
    from laretrieval.pipeline import run_training
    from laretrieval.trackers import mlflow_tracking_uri, wandb_offline_history
    logger = 'csv,wandb,mlflow' + (',tensorboard' if HAS_TENSORBOARD else '')
    run = tmp_path / 'tiny-run'
    metrics = run_training(tiny_config(epochs=2, logger=logger, num_threads=1), run, progress=False)
    log = JsonlLog(run / 'log.jsonl').records()
    steps, epochs = [r for r in log if r['kind'] == 'step'], [r for r in log if r['kind'] == 'epoch']
    assert len(epochs) == 2 and len(steps) == 2 * (28 // 8)
    step_ids, val = [r['step'] for r in steps], np.array([r['val_t2a_mAP@10'] for r in epochs])

    # CSV: a row per step, the validation metric at each epoch's last step, the test metric at the end, the config
    csv = pd.read_csv(run / 'csv' / 'version_0' / 'metrics.csv')
    per_step = csv.dropna(subset=['train/contrastive'])
    assert per_step['step'].tolist() == step_ids
    np.testing.assert_allclose(per_step['train/contrastive'], [r['contrastive'] for r in steps], rtol=1e-6)
    assert csv.dropna(subset=['val/t2a_mAP@10'])['step'].tolist() == [r['step'] for r in epochs]
    np.testing.assert_allclose(csv['val/t2a_mAP@10'].dropna(), val, rtol=1e-9)
    assert csv['test/t2a_mAP@16'].dropna().item() == pytest.approx(metrics['test']['t2a']['mAP@16'], rel=1e-9)
    assert json.loads((run / 'csv' / 'version_0' / 'hparams.json').read_text()) == json.loads((run / 'config.json').read_text())

    # MLflow: the run (named after the folder, finished) in the local store beside it
    client = MlflowClient(mlflow_tracking_uri(tmp_path))
    assert mlflow_tracking_uri(tmp_path) == (tmp_path.resolve() / 'mlruns').as_uri() and (tmp_path / 'mlruns').is_dir()
    run_id = json.loads((run / 'trackers.json').read_text())['mlflow']
    found = client.get_run(run_id)
    assert (found.info.run_name, found.info.status) == ('tiny-run', 'FINISHED')
    history = client.get_metric_history(run_id, 'train/contrastive')
    assert [m.step for m in history] == step_ids
    np.testing.assert_allclose([m.value for m in history], [r['contrastive'] for r in steps], rtol=1e-6)
    np.testing.assert_allclose([m.value for m in client.get_metric_history(run_id, 'val/t2a_mAP_at_10')], val, rtol=1e-9)
    assert found.data.metrics['test/a2t_R_at_1'] == pytest.approx(metrics['test']['a2t']['R@1'], rel=1e-9)
    config = json.loads((run / 'config.json').read_text())
    assert found.data.params == {k: str(v) for k, v in config.items()}

    # W&B offline: the run file's history rows hold the same losses by step, the validation and test metrics, the config
    offline = list((run / 'wandb').glob('offline-run-*'))
    assert len(offline) == 1 and offline[0].name.endswith(json.loads((run / 'trackers.json').read_text())['wandb'])
    rows, wandb_config = wandb_offline_history(offline[0])
    per_step = rows.dropna(subset=['train/contrastive'])
    assert per_step['_step'].tolist() == step_ids
    np.testing.assert_allclose(per_step['train/contrastive'], [r['contrastive'] for r in steps], rtol=1e-6)
    np.testing.assert_allclose(rows['val/t2a_mAP@10'].dropna(), val, rtol=1e-9)
    assert rows['test/t2a_mAP@10'].dropna().item() == pytest.approx(metrics['test']['t2a']['mAP@10'], rel=1e-9)
    assert wandb_config == config

    if HAS_TENSORBOARD:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        events = EventAccumulator(str(next((run / 'tensorboard').glob('events.out.tfevents.*')))); events.Reload()
        assert [e.step for e in events.Scalars('train/contrastive')] == step_ids


@pytest.mark.slow  # trains a point that fails at once, and starts W&B
def test_the_ablation_table_reaches_mlflow_and_wandb(tmp_path, offline_trackers):
    from mlflow.tracking import MlflowClient
    from laretrieval.ablate import grid_points, track_results, write_results
    from laretrieval.trackers import mlflow_tracking_uri, wandb_offline_history
    batch = tmp_path / 'loss-batch'
    points = grid_points({**TINY, 'logger': ['mlflow', 'wandb,csv'], 'seed': [0, 1]})
    (batch / 'runs' / points[0][1]).mkdir(parents=True)
    (batch / 'runs' / points[0][1] / 'failure.json').write_text(json.dumps(dict(error='ValueError: bad', seconds=1.0)))
    table = track_results(write_results(points, batch), points, batch)
    assert len(table) == 4 and table['status'].tolist()[0] == 'failed'
    ids = json.loads((batch / 'trackers.json').read_text())
    client = MlflowClient(mlflow_tracking_uri(batch / 'runs'))
    found = client.get_run(ids['mlflow'])
    assert (found.info.run_name, found.info.status) == ('loss-batch', 'FINISHED')
    sent = client.download_artifacts(ids['mlflow'], 'results.csv', str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_csv(sent), pd.read_csv(batch / 'results.csv'))
    rows, _ = wandb_offline_history(next((batch / 'wandb').glob('offline-run-*')))
    logged = json.loads(next((batch / 'wandb').glob(f"offline-run-*/files/{rows['results/path'].item()}")).read_text())
    assert logged['columns'] == table.columns.tolist() and len(logged['data']) == 4


@pytest.mark.slow  # trains
def test_a_failed_then_resumed_run_continues_its_tracker_runs(tmp_path, offline_trackers, monkeypatch):
    from mlflow.tracking import MlflowClient
    from laretrieval.checkpoints import JsonlLog
    from laretrieval.pipeline import run_training
    from laretrieval.trackers import mlflow_tracking_uri, wandb_offline_history
    from laretrieval.train import Trainer
    cfg, run = tiny_config(epochs=2, logger='mlflow,wandb,csv', num_threads=1), tmp_path / 'cut'
    end_epoch = Trainer.end_epoch
    def stop_after_epoch_1(self, epoch, seconds):
        row = end_epoch(self, epoch, seconds)
        if epoch == 1: raise RuntimeError('stopped after epoch 1')
        return row
    monkeypatch.setattr(Trainer, 'end_epoch', stop_after_epoch_1)
    with pytest.raises(RuntimeError, match='stopped after epoch 1'): run_training(cfg, run, progress=False)
    ids = json.loads((run / 'trackers.json').read_text())
    client = MlflowClient(mlflow_tracking_uri(tmp_path))
    assert client.get_run(ids['mlflow']).info.status == 'FAILED'  # ended, with the run's status, when training raised
    monkeypatch.setattr(Trainer, 'end_epoch', end_epoch)
    metrics = run_training(cfg, run, resume=True, progress=False)

    assert json.loads((run / 'trackers.json').read_text()) == ids  # the same tracker runs, continued
    steps = [r for r in JsonlLog(run / 'log.jsonl').records() if r['kind'] == 'step']
    found = client.get_run(ids['mlflow'])
    assert found.info.status == 'FINISHED' and found.data.metrics['test/t2a_mAP_at_10'] == pytest.approx(metrics['test']['t2a']['mAP@10'])
    history = client.get_metric_history(ids['mlflow'], 'train/total')
    assert [m.step for m in history] == [r['step'] for r in steps]  # every step once, across the two starts
    np.testing.assert_allclose([m.value for m in history], [r['total'] for r in steps], rtol=1e-6)
    offline = sorted((run / 'wandb').glob('offline-run-*'))
    assert len(offline) == 2 and all(p.name.endswith(ids['wandb']) for p in offline)  # `wandb sync` merges them into one run
    logged = pd.concat([wandb_offline_history(p)[0] for p in offline]).dropna(subset=['train/total'])
    assert logged['_step'].tolist() == [r['step'] for r in steps]
    assert sorted(p.name for p in (run / 'csv').iterdir()) == ['version_0', 'version_1']  # a CSV file per start


@pytest.mark.slow  # starts 2 DDP processes
def test_under_ddp_only_process_0_logs(tmp_path, offline_trackers):
    from mlflow.tracking import MlflowClient
    from laretrieval.checkpoints import JsonlLog
    from laretrieval.trackers import mlflow_tracking_uri
    env = offline_env(LARETRIEVAL_CACHE_DIR=str(tmp_path / 'cache'), WANDB_MODE='offline', WANDB_SILENT='true')
    args = set_args(tiny(devices=2, num_threads=1, logger='mlflow,wandb,csv'))
    done = subprocess.run([sys.executable, '-m', 'laretrieval.cli', 'train', *args, '--output-dir', str(tmp_path / 'run'), '--quiet'],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [r for r in JsonlLog(tmp_path / 'run' / 'log.jsonl').records() if r['kind'] == 'step']
    client = MlflowClient(mlflow_tracking_uri(tmp_path))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == 'FINISHED'  # one tracker run, not one per process
    history = client.get_metric_history(runs[0].info.run_id, 'train/total')
    assert [m.step for m in history] == [r['step'] for r in steps] and len(steps) == 3
    assert len(list((tmp_path / 'run' / 'wandb').glob('offline-run-*'))) == 1
    assert [p.name for p in (tmp_path / 'run' / 'csv').iterdir()] == ['version_0']


@pytest.mark.slow  # runs the experiment notebook
def test_the_experiment_notebook_sends_test_metrics_and_ends_the_tracker_runs(tmp_path, offline_trackers):
    from mlflow.tracking import MlflowClient
    from laretrieval.experiment import run_experiment
    from laretrieval.trackers import mlflow_tracking_uri
    run = run_experiment(tiny(logger='csv,mlflow', num_threads=1), run_id='notebook-run', runs_dir=tmp_path, progress=False)
    metrics = json.loads((run / 'metrics.json').read_text())
    csv = pd.read_csv(run / 'csv' / 'version_0' / 'metrics.csv')
    assert csv['test/t2a_mAP@10'].dropna().item() == pytest.approx(metrics['test']['t2a']['mAP@10'], rel=1e-9)
    found = MlflowClient(mlflow_tracking_uri(tmp_path)).get_run(json.loads((run / 'trackers.json').read_text())['mlflow'])
    assert (found.info.run_name, found.info.status) == ('notebook-run', 'FINISHED')
    assert found.data.metrics['test/a2t_mAP_at_10'] == pytest.approx(metrics['test']['a2t']['mAP@10'], rel=1e-9)
