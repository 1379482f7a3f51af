"""`resnetx study --warm FILE`: every arm starts from one fold-1 checkpoint of the arch (its digest in the recipe), then
fastai's fine-tuning; what a warm study refuses before its first run."""
import json, warnings

import pytest, torch
from fastai_resnetx import resnetx_small, resnetx20
from fastai_resnetx.model.weights import CheckpointError
from fastai_resnetx.job.study import StudySettings, run_study, read_results
from fastai_resnetx.job.warm_start import warm_arch, warm_digest
from conftest import randomise
from test_idx_data import write_idx_set


@pytest.fixture
def warm_study(tmp_path):
    "A small idx data set (8x8 px, 3 classes), a fold-1 checkpoint of resnetx_small for it, and a 1-seed study."
    write_idx_set(tmp_path / 'data', n_train=48, n_test=24, size=(8, 8))
    src = randomise(resnetx_small(c_in=1, n_out=3), seed=5)
    torch.save(src.state_dict(), tmp_path / 'warm.pth')
    s = StudySettings(data=str(tmp_path / 'data'), folds=(1, 2), seeds=1, epochs=1, bs=16, lr=1e-3, flip=False,
                      warm=str(tmp_path / 'warm.pth'))
    return tmp_path, s, src.state_dict()


def test_the_digest_by_hand(tmp_path):
    import hashlib
    (tmp_path / 'f').write_bytes(b'abc' * 1_000_000)
    assert warm_digest(tmp_path / 'f') == 'sha256:' + hashlib.sha256(b'abc' * 1_000_000).hexdigest()[:16]


def test_a_warm_learner_starts_from_the_file_and_trains_only_the_head_first(warm_study):
    from fastai_resnetx.job.tensor_data import idx_dls
    from fastai_resnetx.job.idx_data import load_idx_data
    from fastai_resnetx.job.train import make_learner, fit_recipe
    tmp, s, sd = warm_study
    dls = idx_dls(load_idx_data(s.data), bs=16, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = make_learner(dls, warm_arch(resnetx_small, s.warm), pretrained=True)
    body = learn.model[0]
    assert torch.equal(body[0].weight, sd['conv1.weight'])                      # the stem's conv: the file's
    assert torch.equal(body[4][0].branch.conv1.weight, sd['stage1.0.branch.conv1.weight'])
    with learn.no_bar(), learn.no_logging(): fit_recipe(learn, 1, 1e-3, pretrained=True)
    assert torch.equal(body[0].weight, sd['conv1.weight'])                      # frozen epoch: the body's convs stay


def test_a_warm_study_records_its_file_and_refuses_another(warm_study):
    tmp, s, _ = warm_study
    runs, text = run_study(tmp / 'st', s, log=lambda *a: None)
    digest = warm_digest(tmp / 'warm.pth')
    assert [(r['arm'], r['recipe']['warm']) for r in runs] == [('fold1', digest), ('fold2', digest)]
    notes = json.loads((tmp / 'st' / 'study.json').read_text())['notes']
    assert notes == ['warm start: in fold2 12 tensors of 2 projections have no counterpart in warm.pth and keep '
                     'their init (stage3.0.shortcut, stage4.0.shortcut)']
    assert f'warm start ({digest})' in text.splitlines()[0]
    torch.save(randomise(resnetx_small(c_in=1, n_out=3), seed=6).state_dict(), tmp / 'warm.pth')   # other weights
    with pytest.raises(ValueError, match=rf"other settings \(warm '{digest}' -> 'sha256:"):
        run_study(tmp / 'st', s, log=lambda *a: None)
    assert len(read_results(tmp / 'st')) == 2


def test_what_a_warm_study_refuses_before_any_run(warm_study):
    tmp, s, _ = warm_study
    with pytest.raises(ValueError, match=r"`warm` '.*nope.pth' is not a file: pass a checkpoint of resnetx_small"):
        StudySettings(warm=str(tmp / 'nope.pth')).checked()
    with pytest.raises(ValueError, match='`equal_cost` widens fold 1'):
        StudySettings(warm=s.warm, equal_cost=True).checked()
    torch.save(resnetx20(c_in=1).state_dict(), tmp / 'other.pth')             # another arch's file: refused, named
    with pytest.raises(CheckpointError, match=r"`warm` checkpoint '.*other.pth' cannot start fold1: the given state dict does not fit this ResNetX"):
        run_study(tmp / 'st2', StudySettings(**{**s.__dict__, 'warm': str(tmp / 'other.pth')}), log=lambda *a: None)
    assert read_results(tmp / 'st2') == []


def test_warm_through_the_front_door(warm_study, capsys):
    from resnetx_cli import main
    from digit_folders import error_lines
    tmp, s, _ = warm_study
    argv = ['study', '--data', s.data, '--folds', '1', '--seeds', '1', '--epochs', '1', '--bs', '16', '--no-flip']
    assert main([*argv, '--warm', str(tmp / 'nope.pth'), '--out', str(tmp / 'a')]) == 2
    assert error_lines(capsys.readouterr().err) == [f"resnetx study: error: `warm` {str(tmp / 'nope.pth')!r} is not a "
                                                    f"file: pass a checkpoint of resnetx_small at fold 1 (torch.save("
                                                    f"model.state_dict(), ...)), or a ResNet's for a ResNet layout"]
    assert main([*argv, '--warm', str(tmp / 'warm.pth'), '--out', str(tmp / 'b')]) == 0
    rec = json.loads((tmp / 'b' / 'results.jsonl').read_text())
    assert rec['recipe']['warm'] == warm_digest(tmp / 'warm.pth') and rec['arm'] == 'fold1'
