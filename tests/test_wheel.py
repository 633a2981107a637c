"""laretrieval as a user gets it: the wheel built from this checkout, installed into a fresh virtual environment outside
the checkout, run from a folder that is not the checkout — `experiment`, `train`, `ablate` and the caption rewriter's
prompts on tiny settings — and `pip install` of that wheel beside another torch, which it must leave in place.

Offline, the fresh environment cannot download laretrieval's dependencies, so it borrows them: a `.pth` file in its
site-packages adds this environment's site-packages *after* its own. Python does not process `.pth` files of a folder
added that way, so the editable install of the checkout (a `.pth` hook there) stays inactive: `import laretrieval`
finds the wheel's copy, the only one on the path. `pip --python` installs into that environment with this pip."""
import json, shutil, site, subprocess, sys, zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.version import Version

from tiny import TINY, offline_env, set_args

pytestmark = pytest.mark.slow  # builds a wheel, makes environments and trains in subprocesses
PROJECT = Path(__file__).resolve().parents[1]


def user_env(**extra)->dict:
    "A subprocess environment with nothing pointing into the checkout (no PYTHONPATH, no settings file)."
    env = offline_env(**extra)
    for name in ('PYTHONPATH', 'LARETRIEVAL_SETTINGS', 'VIRTUAL_ENV'): env.pop(name, None)
    return env


def pip(*args, python:Path|None=None, **kwargs)->subprocess.CompletedProcess:
    "This environment's pip, acting on `python`'s environment when given."
    where = ['--python', str(python)] if python else []
    return subprocess.run([sys.executable, '-m', 'pip', *where, *args], capture_output=True, text=True, check=True, **kwargs)


def fresh_env(folder:Path)->Path:
    "A new virtual environment (no pip, no packages) that sees this environment's packages after its own; its python."
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(folder)], check=True)
    python = folder / 'bin' / 'python'
    own = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True, check=True).stdout.strip()
    Path(own, '_borrowed_dependencies.pth').write_text('\n'.join(dict.fromkeys(site.getsitepackages())) + '\n')
    return python


@pytest.fixture(scope='module')
def wheel(tmp_path_factory)->Path:
    """The wheel of this checkout, built without network (the build backend already installed here) from a copy of it: an
    in-tree build would leave build/ behind, whose stale files a later wheel would carry."""
    source, dist = tmp_path_factory.mktemp('source') / 'laretrieval', tmp_path_factory.mktemp('dist')
    shutil.copytree(PROJECT, source, symlinks=True, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'runs', 'build', '*.egg-info', '__pycache__', '.ipynb_checkpoints', '_proc', '_docs', '.pytest_cache'))
    pip('wheel', '--no-deps', '--no-build-isolation', '--no-index', '-w', str(dist), str(source), cwd=dist)
    return next(dist.glob('laretrieval-*.whl'))


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory)->Path:
    "A fresh environment with the wheel installed; its bin folder."
    python = fresh_env(tmp_path_factory.mktemp('env') / 'venv')
    pip('install', '--no-deps', '--no-index', str(wheel), python=python)
    return python.parent


def run(bin_dir:Path, *args, cwd:Path, timeout=900)->subprocess.CompletedProcess:
    done = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_wheel_carries_the_notebooks_prompts_and_recipes(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for source, shipped in [('nbs/experiments', 'experiments'), ('data/prompts', 'prompts'), ('data/configs', 'configs'), ('data/grids', 'grids')]:
        for path in (PROJECT / source).iterdir():
            member = f'laretrieval/data/{shipped}/{path.name}'
            assert member in names, member
            assert zipfile.ZipFile(wheel).read(member) == path.read_bytes(), member  # a copy of the file the link leads to


def test_installed_package_is_the_wheel_and_finds_its_files(installed, tmp_path):
    code = ("import json, laretrieval, laretrieval.cli as cli\nfrom laretrieval.rewrite import load_prompt\n"
            "from laretrieval.experiment import DEFAULT_NOTEBOOK\nfrom jupyter_client.kernelspec import KernelSpecManager\n"
            "print(json.dumps(dict(package=laretrieval.__file__, notebook=str(DEFAULT_NOTEBOOK), exists=DEFAULT_NOTEBOOK.exists(),"
            " fields=sorted(load_prompt('translate').fields), recipe=str(cli.params_path('stage1')),"
            " kernel=KernelSpecManager().get_kernel_spec('python3').argv[0])))")
    found = json.loads(run(installed, 'python', '-c', code, cwd=tmp_path).stdout)
    site_packages = str(installed.parent / 'lib')
    assert found['package'].startswith(site_packages) and found['notebook'].startswith(site_packages) and found['exists']
    assert found['recipe'].startswith(site_packages) and found['recipe'].endswith('laretrieval/data/configs/stage1.yaml')
    assert found['fields'] == ['language', 'text']
    assert found['kernel'] == str(installed / 'python')  # papermill's kernel runs the wheel too


def test_train_experiment_and_ablate_run_outside_the_checkout(installed, tmp_path):
    "The three commands a user starts with, from a folder outside the checkout, on the tiny run."
    (tmp_path / 'tiny.yaml').write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != 'epochs'}))
    train = run(installed, 'laretrieval', 'train', '--params', 'tiny.yaml', '--set', 'epochs=1', '--output-dir', 'trained', '--quiet', cwd=tmp_path)
    assert 'text→audio' in train.stdout and json.loads((tmp_path / 'trained' / 'metrics.json').read_text())['test']['t2a']

    experiment = run(installed, 'laretrieval', 'experiment', '--params', 'tiny.yaml', '--set', 'epochs=1', '--run-id', 'one', cwd=tmp_path)
    run_dir = tmp_path / 'runs' / 'one'  # settings' default runs_dir, relative to where the command runs
    assert 'text→audio' in experiment.stdout and (run_dir / 'train_eval.ipynb').exists() and (run_dir / 'metrics.json').exists()

    ablate = run(installed, 'laretrieval', 'ablate', '--params', 'tiny.yaml', '--set', 'epochs=1', '--set', 'loss=[ntxent, sigmoid]',
                 '--batch-dir', 'batch', cwd=tmp_path)
    results = pd.read_csv(tmp_path / 'batch' / 'results.csv')
    assert sorted(results['loss']) == ['ntxent', 'sigmoid'] and (results['status'] == 'done').all(), results
    assert 'ntxent' in ablate.stdout and 'sigmoid' in ablate.stdout


def metadata_wheel(folder:Path, name:str, version:str)->Path:
    "A wheel holding only the metadata of `name` `version`: enough for pip to resolve, install and report it."
    path = folder / f'{name}-{version}-py3-none-any.whl'
    info = f'{name}-{version}.dist-info'
    files = {f'{info}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n',
             f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: laretrieval-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    files[f'{info}/RECORD'] = ''.join(f'{n},,\n' for n in [*files, f'{info}/RECORD'])
    with zipfile.ZipFile(path, 'w') as z:
        for member, text in files.items(): z.writestr(member, text)
    return path


def test_installing_the_wheel_keeps_the_torch_an_environment_has(wheel, tmp_path):
    """A resolution (pip install --dry-run --report) of the wheel into an environment holding torch 2.6.0: pip installs
    laretrieval alone, with torch 2.13.0 (this project's pinned version) on offer; a requirement torch==2.13.0, the old
    exact pin, would replace it."""
    python = fresh_env(tmp_path / 'venv')
    offered = tmp_path / 'wheels'; offered.mkdir()
    pip('install', '--no-deps', '--no-index', str(metadata_wheel(tmp_path, 'torch', '2.6.0')), python=python)
    metadata_wheel(offered, 'torch', '2.13.0')

    def resolve(*requirements)->dict:
        report = tmp_path / 'report.json'
        pip('install', '--dry-run', '--no-index', '--find-links', str(offered), '--report', str(report), *requirements, python=python)
        # public versions: where pip's configuration offers a local build (2.13.0+cpu), it may pick that one
        return {item['metadata']['name']: Version(item['metadata']['version']).public for item in json.loads(report.read_text())['install']}

    installed_torch = subprocess.run([str(python), '-c', 'import importlib.metadata as m; print(m.version("torch"))'],
                                     capture_output=True, text=True, check=True, env=user_env()).stdout.strip()
    assert installed_torch == '2.6.0'
    assert resolve(str(wheel)) == {'laretrieval': '0.1.0'}  # torch 2.6.0 stays
    assert resolve(str(wheel), 'torch==2.13.0') == {'laretrieval': '0.1.0', 'torch': '2.13.0'}  # what the old pin did
