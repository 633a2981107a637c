"A new audio encoder, loss term and corpus are each a class plus one registry line; the config, builder and trainer need nothing else."
import ast
import json
from collections import Counter
from pathlib import Path

import pytest

from laretrieval.config import ExperimentConfig
from laretrieval.registry import AUDIO_ENCODERS, CORPORA, LOSS_TERMS, Registry
from tiny import tiny_config

PACKAGE = Path(__file__).resolve().parent.parent / 'laretrieval'


@pytest.fixture
def toys():
    "Register the toy extensions for one test (the three lines registry.py would hold), and remove them after."
    AUDIO_ENCODERS.register('chunks', 'toy_extensions:ChunkAudioEncoder')
    LOSS_TERMS.register('uniformity', 'toy_extensions:UniformityTerm')
    CORPORA.register('every_fifth', 'toy_extensions:EveryFifthCorpus')
    yield
    AUDIO_ENCODERS.unregister('chunks'); LOSS_TERMS.unregister('uniformity'); CORPORA.unregister('every_fifth')


def test_config_accepts_registered_names_only(toys):
    cfg = ExperimentConfig(audio_encoder='chunks', dataset='every_fifth')
    assert (cfg.audio_encoder, cfg.dataset) == ('chunks', 'every_fifth')
    with pytest.raises(ValueError, match="unknown audio_encoder 'beats'.*'cnn', 'passt'.*'chunks'"):
        ExperimentConfig(audio_encoder='beats')


def test_unregistered_names_are_refused_again():
    with pytest.raises(ValueError, match="unknown dataset 'every_fifth'"):
        ExperimentConfig(dataset='every_fifth')


@pytest.mark.slow
def test_a_run_trains_with_the_toy_encoder_term_and_corpus(toys, tmp_path):
    from laretrieval.build import build_training
    from laretrieval.pipeline import run_training
    cfg = tiny_config(audio_encoder='chunks', dataset='every_fifth', epochs=2)
    built = build_training(cfg)
    assert type(built.model.audio_encoder).__name__ == 'ChunkAudioEncoder'
    assert list(built.loss.terms) == ['contrastive', 'uniformity']
    assert Counter(c.split for c in built.splits.test.clips + built.splits.val.clips) == Counter(test=8, val=8)
    metrics = run_training(cfg, tmp_path / 'run', progress=False)
    steps = [json.loads(l) for l in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines() if '"step"' in l]
    steps = [r for r in steps if r['kind'] == 'step']
    assert all(r['total'] == pytest.approx(r['contrastive'] + 0.1 * r['uniformity'], rel=1e-5) for r in steps)
    assert steps[-1]['contrastive'] < steps[0]['contrastive']  # it learns
    assert metrics['n_test_clips'] == 8 and 0 <= metrics['test']['t2a']['mAP@10'] <= 1


def test_registry_resolves_prefixes_and_defaults():
    r = Registry('text encoder', {'hf': 'laretrieval.encoders:TextEncoder'}, prefixed=('hf',), default='hf')
    assert r.split('hf:roberta-large') == ('hf', 'roberta-large') and r.split('minilm') == ('hf', 'minilm')
    assert r.get('roberta-large').__name__ == 'TextEncoder'


def test_no_import_cycle_in_the_package():
    "Every `laretrieval` import, at the top of a module or inside a function, points down a graph without cycles."
    graph = {}
    for path in PACKAGE.glob('*.py'):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.level == 1: names.add(node.module.split('.')[0])
                elif node.module.startswith('laretrieval.'): names.add(node.module.split('.')[1])
                elif node.module == 'laretrieval': names.update(a.name for a in node.names if (PACKAGE / f'{a.name}.py').exists())
            elif isinstance(node, ast.Import):
                names.update(a.name.split('.')[1] for a in node.names if a.name.startswith('laretrieval.'))
        graph[path.stem] = names - {path.stem, '_modidx'}
    state = {}
    def visit(module, trail):
        if state.get(module) == 'done': return
        assert state.get(module) != 'open', f"import cycle: {' -> '.join(trail + [module])}"
        state[module] = 'open'
        for dependency in sorted(graph.get(module, ())): visit(dependency, trail + [module])
        state[module] = 'done'
    for module in sorted(graph): visit(module, [])
    assert {'train', 'model', 'hub', 'ensemble', 'teachers'} <= set(graph)
