"""A fold-1 ResNetX's own checkpoint starts the same arch at any fold (as a ResNet's weights do): every tensor whose name
and shape the fold-1 model has is loaded, the projections the fold adds keep their init; anything else is refused."""
import json, warnings

import pytest, torch
from fastai_resnetx import resnetx_small, resnetx20
from fastai_resnetx.model.weights import CheckpointError
from conftest import randomise


@pytest.fixture(scope='module')
def fold1(tmp_path_factory):
    "A fold-1 resnetx_small with every tensor random, and its checkpoint file."
    src = randomise(resnetx_small(n_out=10), seed=3)
    path = tmp_path_factory.mktemp('warm') / 'fold1.pth'
    torch.save(src.state_dict(), path)
    return src.state_dict(), path


@pytest.mark.parametrize('fold', [2, 3])
def test_a_fold_1_checkpoint_starts_a_folded_model(fold1, fold):
    sd, path = fold1
    with pytest.warns(UserWarning, match=r"12 tensors of 2 projections have no counterpart .* keep their "
                                         r"initialisation \(stage3.0.shortcut, stage4.0.shortcut\)"):
        m = resnetx_small(fold=fold, n_out=10, weights=path)
    # by hand (layout 1,1,1,1; widths 16, 32, 64, 128; stem 16 at 28 px): at fold 2 and 3 unit 2 adds the stem's output
    # (16 channels, stride 2 to go: the fold-1 projection's shape), units 3 and 4 add outputs two back (16 -> 64 and
    # 32 -> 128, stride 4): not the fold-1 projections' shapes (32 -> 64, 64 -> 128)
    new = {k for k in m.state_dict() if k.startswith(('stage3.0.shortcut.', 'stage4.0.shortcut.'))}
    assert set(m.new_keys) == new and len(new) == 12
    for p in ('stage3.0.shortcut.0.weight', 'stage4.0.shortcut.0.weight'):
        assert m.state_dict()[p].shape != sd[p].shape
    for k, v in m.state_dict().items():
        if k in new: assert k.endswith('num_batches_tracked') or not torch.equal(v, sd[k]), k   # its norm too
        else: assert torch.equal(v, sd[k]), k


def test_a_folded_checkpoint_fits_only_its_own_fold(tmp_path, fold1):
    sd, path = fold1
    torch.save(resnetx_small(fold=2, n_out=10).state_dict(), tmp_path / 'fold2.pth')
    for fold in (1, 3):
        with pytest.raises(CheckpointError, match=r"does not fit this ResNetX \(\d shape mismatch"):
            resnetx_small(fold=fold, n_out=10, weights=tmp_path / 'fold2.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('error')                       # its own fold: every tensor, no warning
        m = resnetx_small(fold=2, n_out=10, weights=tmp_path / 'fold2.pth')
        # stage-local with one unit a stage: every skip is the previous output, the fold-1 model itself
        local = resnetx_small(fold=2, stage_local=True, n_out=10, weights=path)
    assert m.new_keys == [] and len(m.pretrained_report.loaded) == len(m.state_dict())
    assert local.new_keys == [] and all(torch.equal(v, sd[k]) for k, v in local.state_dict().items())
    other = {k: v for k, v in sd.items() if not k.startswith('stage4.')}   # a fold-1 file missing a stage: refused
    torch.save(other, tmp_path / 'part.pth')
    with pytest.raises(CheckpointError, match=r"does not fit this ResNetX \(\d+ missing keys"):
        resnetx_small(fold=2, n_out=10, weights=tmp_path / 'part.pth')


# ---- the study's warm start: `resnetx study --warm FILE`

from fastai_resnetx.job import study as study_mod
from fastai_resnetx.job.study import StudySettings, run_study, read_results
from fastai_resnetx.job.warm_start import warm_arch, warm_digest
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
