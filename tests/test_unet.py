"`unet_learner(dls, resnetx34)` is fastai's U-Net on a ResNet: at fold 1 the same model as on torchvision's resnet34."
import numpy as np
import pytest, torch
import torch.nn.functional as F
from torch import nn
from sklearn.datasets import load_digits
from fastai.vision.all import (DataBlock, ImageBlock, MaskBlock, ItemGetter, RandomSplitter, unet_learner, load_learner,
                               resnet34, set_seed, Dice, TensorMask)
from fastai.vision.learner import _resnet_split
from fastai.vision.models.unet import UnetBlock
from fastai_resnetx import resnetx18, resnetx34, resnetx_arch, arch_splitter, arch_groups, model_summary, Stage


def digit_strokes(size=32, n=None, threshold=0.5):
    "scikit-learn's digits upscaled to `size` px as (RGB image, mask) pairs of arrays; the mask is 1 on the strokes."
    x = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)[:, 0].clamp(0, 1)
    images, masks = (x * 255).round().byte().numpy(), (x > threshold).byte().numpy()
    return [(np.repeat(im[..., None], 3, axis=2), m) for im, m in zip(images, masks)]


def digit_seg_dls(size=32, n=None, bs=16, seed=42):
    "fastai DataLoaders of digit strokes: 2 classes, background and stroke."
    block = DataBlock(blocks=(ImageBlock, MaskBlock(codes=['background', 'stroke'])), get_x=ItemGetter(0),
                      get_y=ItemGetter(1), splitter=RandomSplitter(0.25, seed=seed))
    return block.dataloaders(digit_strokes(size, n), bs=bs, device='cpu')


@pytest.fixture(scope='module')
def dls():
    set_seed(0)
    return digit_seg_dls(n=40)


def skips(learn):
    "The encoder modules whose outputs the U-Net's decoder concatenates (fastai hooks them), and their feature shapes."
    unet_blocks = [m for m in learn.model.modules() if isinstance(m, UnetBlock)]
    x = learn.dls.one_batch()[0][:2]
    learn.model.eval()
    with torch.no_grad(): learn.model(x)
    return len(learn.model.sfs), len(unet_blocks), [tuple(h.stored.shape[1:]) for h in learn.model.sfs]


def test_fold1_is_torchvisions_resnet34_unet(dls):
    tv = unet_learner(dls, resnet34, pretrained=False)
    ours = unet_learner(dls, resnetx34, pretrained=False)
    n_skips, n_blocks, shapes = skips(tv)
    assert (n_skips, n_blocks) == (4, 4)            # incl. the half-resolution skip after the stem's ReLU
    assert skips(ours) == (n_skips, n_blocks, shapes) == (4, 4, [(256, 2, 2), (128, 4, 4), (64, 8, 8), (64, 16, 16)])
    assert sum(p.numel() for p in ours.model.parameters()) == sum(p.numel() for p in tv.model.parameters())
    flops = [model_summary(l.model, input_size=(1, 3, 32, 32)).total_flops for l in (tv, ours)]
    assert flops[0] == flops[1] > 0
    # the same weights in the same order (encoder, then decoder): the same outputs
    ts, os_ = tv.model.state_dict(), ours.model.state_dict()
    assert [v.shape for v in ts.values()] == [v.shape for v in os_.values()]
    ours.model.load_state_dict(dict(zip(os_, ts.values())))
    x = dls.one_batch()[0][:2]
    tv.model.eval(); ours.model.eval()
    with torch.no_grad(): torch.testing.assert_close(ours.model(x), tv.model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('fold', [2, 3])
def test_folded_unet_keeps_4_skips_and_trains(dls, fold):
    learn = unet_learner(dls, resnetx_arch('resnetx34', fold=fold), pretrained=False)
    assert skips(learn) == (4, 4, [(256, 2, 2), (128, 4, 4), (64, 8, 8), (64, 16, 16)])
    assert [type(m) for m in learn.model[0]][4:] == [Stage] * 4
    before = [p.detach().clone() for p in learn.model[0][7].parameters()]
    learn.fit(1, 1e-3)
    assert np.isfinite(learn.recorder.losses[-1].item())
    assert any(not torch.equal(a, b) for a, b in zip(before, learn.model[0][7].parameters()))   # the last stage learned


def test_splitter_and_freeze(dls):
    learn = unet_learner(dls, resnetx34, pretrained=False)
    groups = arch_groups(learn.model)
    assert [g.role for g in groups] == ['stem + stages 1-2', 'stages 3-4', 'decoder']
    # the same groups as fastai's own split of torchvision's resnet U-Net: m[0][:6], m[0][6:], m[1:]
    ids = lambda gs: [[id(p) for p in g] for g in gs]
    assert ids(learn.splitter(learn.model)) == ids(_resnet_split(learn.model))
    learn.freeze()
    norms = {id(p) for m in learn.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    groups = learn.opt.param_lists
    assert len(groups) == 3 and all(p.requires_grad for p in groups[-1])            # the decoder trains
    frozen = [p for g in groups[:-1] for p in g]
    assert all(p.requires_grad == (id(p) in norms) for p in frozen)                 # the encoder's norms too (train_bn)
    assert any(id(p) in norms for p in frozen) and any(not p.requires_grad for p in frozen)


@pytest.mark.slow
def test_fine_tune_show_results_predict_export(dls, tmp_path):
    set_seed(0)
    learn = unet_learner(dls, resnetx_arch('resnetx18', fold=2), pretrained=False, metrics=Dice(), path=tmp_path)
    with learn.no_bar(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    assert 0 <= learn.validate()[1] <= 1
    learn.show_results(max_n=2)
    item = dls.valid_ds.items[0]
    mask, pred, probs = learn.predict(item)
    assert isinstance(mask, TensorMask) and mask.shape == (32, 32) and set(mask.unique().tolist()) <= {0, 1}
    assert probs.shape == (2, 32, 32) and torch.allclose(probs.sum(0), torch.ones(32, 32), atol=1e-5)
    learn.export('unet.pkl')
    learn2 = load_learner(tmp_path / 'unet.pkl')
    assert torch.equal(learn2.predict(item)[0], mask)


def test_c_in_in_a_unet_is_an_error_naming_it(dls):
    with pytest.raises(TypeError, match='c_in'): unet_learner(dls, resnetx18, pretrained=False, c_in=1)
    with pytest.raises(ValueError, match='n_in'): resnetx_arch('resnetx18', c_in=1)
