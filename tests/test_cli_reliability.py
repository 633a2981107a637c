"The command line on bad input and broken state: a clear error naming the file or parameter, exit 2; no lost result."
import json
import re
from pathlib import Path

import papermill
import pytest
import yaml

import laretrieval.ablate as ablate
from laretrieval import cli


def _metrics(value:float=0.3)->dict:
    "A finished run's metrics.json (what test_and_save writes), with one value everywhere."
    direction = {'mAP@10': value, 'mAP@16': value, 'R@1': value, 'chance_mAP@10': 0.01}
    return dict(test=dict(t2a=direction, a2t=direction), best_epoch=1, n_test_clips=10, n_test_captions=50)


# (4) a partial metrics.json: the error names the file

def test_show_names_a_partial_metrics_file(tmp_path, capsys):
    "A metrics.json cut off mid-write (char 100): `laretrieval show` exits 2 naming the file, not json's bare message."
    run = tmp_path / 'run'; run.mkdir()
    (run / 'metrics.json').write_text(json.dumps(_metrics(), indent=2)[:100])
    assert cli.main(['show', str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run / 'metrics.json') in err and 'not valid JSON' in err and 'line' in err


# (5) `laretrieval train --overwrite`

def test_train_passes_overwrite_to_run_training(tmp_path, monkeypatch):
    "--overwrite reaches run_training as overwrite=True; without it overwrite=False."
    import laretrieval.pipeline
    calls = []
    def fake(cfg, output_dir, resume=False, progress=True, overwrite=False):
        calls.append(dict(resume=resume, overwrite=overwrite, output_dir=str(output_dir))); return None
    monkeypatch.setattr(laretrieval.pipeline, 'run_training', fake)
    assert cli.main(['train', '--output-dir', str(tmp_path / 'run'), '--overwrite', '--quiet']) == 0
    assert cli.main(['train', '--output-dir', str(tmp_path / 'run'), '--resume', '--quiet']) == 0
    assert calls == [dict(resume=False, overwrite=True, output_dir=str(tmp_path / 'run')),
                     dict(resume=True, overwrite=False, output_dir=str(tmp_path / 'run'))]


def test_train_refuses_resume_with_overwrite(tmp_path, capsys):
    "--resume and --overwrite contradict each other: exit 2 naming both, before anything runs."
    with pytest.raises(SystemExit) as stop:
        cli.main(['train', '--output-dir', str(tmp_path / 'run'), '--resume', '--overwrite'])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert '--overwrite' in err and '--resume' in err
    assert not (tmp_path / 'run').exists()


# (10) --run-id must be a plain folder name

@pytest.mark.parametrize('run_id', ['../../x', 'a/b', '..', '.', 'ABSOLUTE', ''])
def test_experiment_run_id_must_be_a_folder_name(tmp_path, monkeypatch, capsys, run_id):
    "`laretrieval experiment --run-id ../../x` writes nothing anywhere and exits 2 naming --run-id."
    run_id = str(tmp_path / 'abs') if run_id == 'ABSOLUTE' else run_id
    executed = []
    monkeypatch.setattr(papermill, 'execute_notebook', lambda *a, **k: executed.append(a))
    runs = tmp_path / 'deep' / 'runs'
    assert cli.main(['experiment', '--run-id', run_id, '--runs-dir', str(runs), '--set', 'epochs=1']) == 2
    assert '--run-id' in capsys.readouterr().err
    assert executed == [] and not (tmp_path / 'deep').exists() and not (tmp_path / 'x').exists()
    assert not (tmp_path / 'abs').exists()


# (11) malformed or non-mapping YAML files

@pytest.mark.parametrize('command', ['experiment', 'train', 'clusters', 'ablate'])
def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys, command):
    "A YAML syntax error in --params / the grid: exit 2, the file and the line yaml reports, no traceback."
    bad = tmp_path / 'params.yaml'
    bad.write_text('epochs: 2\nloss: [ntxent, sigmoid\nseed: 0\n')
    args = {'experiment': ['experiment', '--params', str(bad), '--runs-dir', str(tmp_path / 'runs')],
            'train': ['train', '--params', str(bad), '--output-dir', str(tmp_path / 'run')],
            'clusters': ['clusters', '--params', str(bad), '--n-clusters', '2', '--output', str(tmp_path / 'l.csv')],
            'ablate': ['ablate', str(bad), '--batch-dir', str(tmp_path / 'batch')]}[command]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and re.search(r'line \d+', err) and '<unicode string>' not in err
    assert not (tmp_path / 'runs').exists() and not (tmp_path / 'batch').exists()


@pytest.mark.parametrize('text', ['- epochs: 2\n- seed: 1\n', 'just a string\n', '3\n'])
def test_yaml_that_is_not_a_mapping_names_the_file(tmp_path, capsys, text):
    "A YAML list (or scalar) where parameters are expected: exit 2 naming the file and what it holds."
    bad = tmp_path / 'params.yaml'
    bad.write_text(text)
    assert cli.main(['train', '--params', str(bad), '--output-dir', str(tmp_path / 'run')]) == 2
    assert cli.main(['ablate', str(bad), '--batch-dir', str(tmp_path / 'batch')]) == 2
    err = capsys.readouterr().err
    assert err.count(str(bad)) == 2 and 'mapping' in err and 'dictionary update sequence' not in err


@pytest.mark.parametrize('setting, name', [('epochs=0', 'epochs'), ('accumulate_batches=0', 'accumulate_batches'),
                                           ('eval_batch_size=0', 'eval_batch_size'), ('esc50_test_fold=9', 'esc50_test_fold'),
                                           ('audio_lr=.nan', 'audio_lr'), ('tau=0', 'tau')])
def test_out_of_range_values_stop_the_cli_at_once(tmp_path, monkeypatch, capsys, setting, name):
    "The issue's values: exit 2 naming the parameter before a kernel starts."
    executed = []
    monkeypatch.setattr(papermill, 'execute_notebook', lambda *a, **k: executed.append(a))
    assert cli.main(['experiment', '--set', setting, '--runs-dir', str(tmp_path / 'runs')]) == 2
    assert f"'{name}'" in capsys.readouterr().err and executed == []


# (14) every run of a batch failed

def test_ablate_where_every_run_fails_prints_the_table_and_exits_1(tmp_path, monkeypatch, capsys):
    "Two arms, both seeds failing: the table lists each arm with 0 runs, 2 failed and the first error; exit 1."
    def failing(params, run_id, runs_dir, **kw):
        raise RuntimeError(f"injected failure for loss={params['loss']}")
    monkeypatch.setattr(ablate, 'run_experiment', failing)
    grid = tmp_path / 'grid.yaml'
    grid.write_text(yaml.safe_dump({'loss': ['ntxent', 'sigmoid'], 'seed': [0, 1], 'epochs': 1}))
    assert cli.main(['ablate', str(grid), '--batch-dir', str(tmp_path / 'batch')]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ['arm', 'runs', 'failed']
    ntxent = next(line for line in lines if line.lstrip().startswith('loss=ntxent'))
    assert ntxent.split()[1:3] == ['0', '2'] and 'injected failure for loss=ntxent' in ntxent
    assert 'injected failure for loss=sigmoid' in out


def test_malformed_set_value_names_the_setting(tmp_path, capsys):
    "`--set map_ks=[10, 16` (unclosed): exit 2 naming the --set pair, not a parser traceback."
    assert cli.main(['experiment', '--set', 'map_ks=[10, 16', '--runs-dir', str(tmp_path / 'runs')]) == 2
    err = capsys.readouterr().err
    assert "--set map_ks=[10, 16" in err and 'not valid YAML' in err
