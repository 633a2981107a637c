"The evaluation notebook run through papermill on tiny similarity matrices and on a run folder's checkpoint."
import json
from pathlib import Path

import numpy as np
import papermill as pm
import pytest
import torch

from laretrieval.config import ExperimentConfig
from laretrieval.losses import positive_mask
from laretrieval.metrics import loop_metrics
from laretrieval.package import shipped
from tiny import TINY_MODEL

pytestmark = pytest.mark.slow  # each test starts a kernel
NOTEBOOK = shipped('experiments', 'evaluate.ipynb')

# 3 clips x 2 captions; the relevant clip of captions 0..5 is ranked 1, 2, 1, 3, 1, 2 (text->audio)
SIM = torch.tensor([[0.9, 0.1, 0.2],
                    [0.5, 0.7, 0.1],
                    [0.1, 0.8, 0.3],
                    [0.6, 0.4, 0.5],
                    [0.2, 0.1, 0.9],
                    [0.8, 0.2, 0.6]])
TEXT_IDS = ['a', 'a', 'b', 'b', 'c', 'c']
AUDIO_IDS = ['a', 'b', 'c']


def run(tmp_path, **params):
    out = tmp_path / 'executed.ipynb'
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=dict(n_resamples=300, **params), progress_bar=False,
                        kernel_name='python3', cwd=str(tmp_path))
    where = params.get('output_dir') or params.get('run_dir') or tmp_path  # the notebook's default: beside the input
    return json.loads((Path(where) / 'eval_metrics.json').read_text())


def check_against_reference(res):
    rel = positive_mask(TEXT_IDS, AUDIO_IDS)
    for direction, s, r in (('t2a', SIM, rel), ('a2t', SIM.T, rel.T)):
        ref = loop_metrics(s, r, (10, 16), (1, 5, 10))
        for name, v in ref.items():
            key = name if name != 'rank' else 'mean_rank'
            assert res[direction][key] == pytest.approx(v.mean(), abs=1e-12), (direction, name)
        assert res[direction]['median_rank'] == pytest.approx(np.median(ref['rank']))


def test_similarity_pt_gives_hand_computed_metrics_ci_and_plot(tmp_path):
    torch.save(dict(similarity=SIM, text_ids=TEXT_IDS, audio_ids=AUDIO_IDS), tmp_path / 'sims.pt')
    res = run(tmp_path, similarity_path=str(tmp_path / 'sims.pt'), output_dir=str(tmp_path / 'out'))
    t2a = res['t2a']
    assert t2a['mAP@10'] == pytest.approx((1 + 1/2 + 1 + 1/3 + 1 + 1/2) / 6, abs=1e-12)
    assert t2a['R@1'] == pytest.approx(3 / 6) and t2a['R@5'] == 1.0
    assert t2a['chance_R@1'] == pytest.approx(1 / 3)
    check_against_reference(res)
    ci = res['ci']['t2a mAP@10']
    assert ci['mean'] == pytest.approx(t2a['mAP@10'], abs=1e-12)
    assert ci['low'] <= ci['mean'] <= ci['high'] and ci['low'] < ci['high']
    assert ci['n_groups'] == 3  # grouped by clip
    assert res['ci']['a2t mAP@16']['n_groups'] == 3
    assert (tmp_path / 'out' / 'rank_distribution.png').stat().st_size > 0


def test_npy_with_ids_json_gives_the_same_metrics(tmp_path):
    np.save(tmp_path / 'sims.npy', SIM.numpy())
    (tmp_path / 'sims.ids.json').write_text(json.dumps(dict(text_ids=TEXT_IDS, audio_ids=AUDIO_IDS)))
    res = run(tmp_path, similarity_path=str(tmp_path / 'sims.npy'), group_by_clip=False)
    check_against_reference(res)
    assert res['ci']['t2a mAP@10']['n_groups'] == 6  # each caption alone
    assert (tmp_path / 'rank_distribution.png').exists()


def test_run_folder_checkpoint_is_evaluated_on_the_builtin_test_split(tmp_path):
    from laretrieval.datasets import AudioCaptionDataset, make_builtin_set, split_clips
    from laretrieval.model import build_model
    from laretrieval.evaluate import evaluate_model
    cfg = ExperimentConfig(builtin_clips=40, **TINY_MODEL, eval_batch_size=16)  # an untrained model: no epochs, no batch size
    torch.manual_seed(0)
    model = build_model(cfg)
    (tmp_path / 'run').mkdir()
    torch.save(dict(state_dict=model.state_dict(), config=cfg.to_dict(), epoch=1), tmp_path / 'run' / 'checkpoint.pt')
    res = run(tmp_path, run_dir=str(tmp_path / 'run'), map_ks=[10], recall_ks=[1, 5])
    test_set = AudioCaptionDataset(split_clips(make_builtin_set(40, cfg.data_seed, cfg.sample_rate, seconds=4.0), 'test'),
                                   cfg.sample_rate, 4.0)
    direct = evaluate_model(model, test_set, 16)
    assert res['n_clips'] == len(test_set.clips) and res['n_captions'] == 5 * len(test_set.clips)
    for direction in ('t2a', 'a2t'):
        for name in ('mAP@10', 'R@1', 'R@5'):
            assert res[direction][name] == pytest.approx(direct[direction][name], abs=1e-9), (direction, name)
    assert (tmp_path / 'run' / 'eval_metrics.json').exists()


@pytest.mark.parametrize('params, message', [(dict(), 'exactly one'), (dict(n_resamples='9'), "'n_resamples'")])
def test_bad_parameters_stop_in_the_check_cell(tmp_path, params, message):
    torch.save(dict(similarity=SIM, text_ids=TEXT_IDS, audio_ids=AUDIO_IDS), tmp_path / 'sims.pt')
    if params: params = dict(similarity_path=str(tmp_path / 'sims.pt'), **params)
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / 'x.ipynb'), parameters=params, progress_bar=False, kernel_name='python3')
    assert message in str(err.value)
    assert not (tmp_path / 'eval_metrics.json').exists()
