"The stem for small images, resnetx_small, and the stage-local fold: against hand-built references and hand tables."
import pytest, torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from fastai_resnetx import resnetx_small, fold_plan, ResNetX, ResNetXConfig
from fastai_resnetx.model.resnetx import CarryError
from fastai_resnetx.model.topology import stage_input
from test_layers import load_same
from conftest import randomise


def downsample(ni, nf): return nn.Sequential(nn.Conv2d(ni, nf, 1, 2, bias=False), nn.BatchNorm2d(nf))


def hand_built_small_resnet(n_out=10):
    "resnetx_small at fold 1, written out with torchvision's BasicBlock: 3x3 stride-1 stem, no max-pool, 16..128."
    return nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         BasicBlock(16, 16), BasicBlock(16, 32, 2, downsample(16, 32)),
                         BasicBlock(32, 64, 2, downsample(32, 64)), BasicBlock(64, 128, 2, downsample(64, 128)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def test_small_stem_at_fold_1_is_a_hand_built_resnet():
    ours, ref = load_same(resnetx_small(num_classes=10, in_chans=1), hand_built_small_resnet())
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    shapes = [tuple(o.shape[1:]) for o in ours.forward_intermediates(x, intermediates_only=True)]
    assert shapes == [(16, 28, 28), (16, 28, 28), (32, 14, 14), (64, 7, 7), (128, 4, 4)]   # 28x28 kept in stage 1
    assert [f['reduction'] for f in ours.feature_info] == [1, 1, 2, 4, 8]


def test_stage_input():
    assert [stage_input(l, (3, 3)) for l in range(1, 7)] == [0, 0, 0, 3, 3, 3]
    assert [stage_input(l, (1, 2, 1)) for l in range(1, 5)] == [0, 1, 1, 3]


def test_stage_local_plan_by_hand():
    # (3, 3) at fold 3: the fold rule gives sources 0, 1, 1, 0, 3, 2 (skip lengths 1, 1, 2, 4, 2, 4);
    # stage-local clips them to each stage's input (0 for units 1-3, 3 for units 4-6): 0, 1, 1, 3, 3, 3
    assert fold_plan((3, 3), 3).sources == (0, 1, 1, 0, 3, 2)
    plan = fold_plan((3, 3), 3, stage_local=True)
    assert plan.sources == (0, 1, 1, 3, 3, 3) and plan.stage_local
    # one unit a stage: every folded skip crossed a stage, so stage-local is a plain ResNet
    assert fold_plan((1, 1, 1, 1), 2, stage_local=True).sources == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=r"`stage_local` must be True or False, got 'yes'"):
        fold_plan((3, 3), 2, stage_local='yes')


@pytest.mark.parametrize('fold', [2, 3])
def test_stage_local_model_matches_reference_and_each_stage_is_pure(fold):
    cfg = ResNetXConfig((3, 3), 'basic', (16, 24), strides=(1, 2), stem='small', stem_width=8, num_classes=4,
                        fold=fold, stage_local=True)
    m = randomise(ResNetX(cfg)).eval()
    x = torch.randn(2, 3, 12, 12)
    out = {0: m.act1(m.bn1(m.conv1(x)))}
    for l, unit in enumerate(m.units, start=1):   # a reference forward from the clipped sources, by hand
        src = max(fold_plan((3, 3), fold).sources[l - 1], stage_input(l, (3, 3)))
        out[l] = unit.act(unit.branch(out[l - 1]) + unit.shortcut(out[src]))
    with torch.no_grad():
        assert torch.allclose(m.forward_features(x), out[6], atol=1e-5)
        # each stage is a function of its input alone: a stage run on a bare tensor computes what it does in the model
        s1 = m.stage1(m.forward_stem(x))
        assert torch.allclose(m.stage2(s1.clone() * 1), out[6], atol=1e-5)
        cross = randomise(ResNetX(cfg.replace(stage_local=False))).eval()
        with pytest.raises(CarryError): cross.stage2(cross.stage1(cross.forward_stem(x)).clone() * 1)
