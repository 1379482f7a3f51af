"""A fold-1 ResNetX's own checkpoint starts the same arch at any fold (as a ResNet's weights do): every tensor whose name
and shape the fold-1 model has is loaded, the projections the fold adds keep their init; anything else is refused."""
import warnings

import pytest, torch
from fastai_resnetx import resnetx_small
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
