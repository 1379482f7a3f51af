import pytest, torch
from torch import nn
from fastai_resnetx import (ConvNormAct, Conv1x1NormAct, Conv3x3NormAct, ResidualAdd, SqueezeExcitation, BasicBlock,
                            Bottleneck, LinearBottleneck, InvertedResidual, DepthwiseSeparableConv, MBConv, FusedMBConv,
                            AvgPoolResBlock, residual_block, BLOCKS, num_params)

x = torch.randn(1, 32, 56, 56)


def n_weights(m, cls=nn.Conv2d): return sum(c.weight.numel() for c in m.modules() if isinstance(c, cls))


def test_depthwise_is_really_depthwise():
    # a common write-up of these blocks swallows `groups`, so its depthwise conv is dense; here a depthwise 3x3 on C channels has 9*C weights
    m = DepthwiseSeparableConv(32, 64)
    assert m(x).shape == (1, 64, 56, 56)                # the blog loses two pixels of padding (54)
    assert n_weights(m.conv_dw) == 9 * 32 and n_weights(m.conv_pw) == 32 * 64
    mb = MBConv(32, 64, expansion=4)
    assert n_weights(mb.conv_dw) == 9 * 128             # the depthwise conv of MBConv
    assert mb.conv_dw.groups == 128


def test_param_counts():
    assert n_weights(BasicBlock(32, 64)) == 9 * 32 * 64 + 9 * 64 * 64
    assert n_weights(Bottleneck(32, 64)) == 32 * 16 + 9 * 16 * 16 + 16 * 64
    assert n_weights(InvertedResidual(32, 64)) == 32 * 128 + 9 * 128 * 128 + 128 * 64
    assert n_weights(FusedMBConv(32, 64)) == 9 * 32 * 128 + 128 * 64
    se = SqueezeExcitation(128, 0.25, squeeze_from=32)
    assert num_params(se) == 128 * 8 + 8 + 8 * 128 + 128
    assert n_weights(MBConv(32, 64)) == 32 * 128 + 9 * 128 + 128 * 64 + 2 * 128 * 8


@pytest.mark.parametrize('name', sorted(BLOCKS))
@pytest.mark.parametrize('stride', [1, 2])
def test_every_block_shape(name, stride):
    m = BLOCKS[name](32, 64, stride)
    assert m(x).shape == (1, 64, 56 // stride, 56 // stride)
    r = residual_block(name, 32, 64, stride)
    assert r(x).shape == (1, 64, 56 // stride, 56 // stride)
    assert isinstance(r.shortcut, nn.Sequential)       # shape changes, so the shortcut projects


def test_post_act():
    assert Bottleneck.post_act and BasicBlock.post_act
    assert not (LinearBottleneck.post_act or MBConv.post_act or FusedMBConv.post_act or InvertedResidual.post_act)
    assert isinstance(residual_block('bottleneck', 32, 32).act, nn.ReLU)
    assert isinstance(residual_block('mbconv', 32, 32).act, nn.Identity)
    assert isinstance(residual_block('basic', 32, 32).shortcut, nn.Identity)


def test_avgpool_resblock_pools_the_shortcut():
    m = AvgPoolResBlock(8, 16, stride=2)
    assert m(torch.randn(2, 8, 28, 28)).shape == (2, 16, 14, 14)
    assert isinstance(m.shortcut[0], nn.AvgPool2d)
    assert AvgPoolResBlock(8, 16, stride=2)(torch.randn(2, 8, 7, 7)).shape == (2, 16, 4, 4)  # ceil_mode: 7 -> 4, as fastai's ResBlock
    assert isinstance(AvgPoolResBlock(16, 16).shortcut, nn.Identity)


def test_named_layers_like_torchvision_and_timm():
    assert [n for n, _ in Bottleneck(64, 256).named_children()] == ['conv1', 'bn1', 'act1', 'conv2', 'bn2', 'act2',
                                                                    'conv3', 'bn3']
    assert [n for n, _ in MBConv(32, 64).named_children()] == ['conv_pw', 'bn1', 'act1', 'conv_dw', 'bn2', 'act2', 'se',
                                                               'conv_pwl', 'bn3']
    assert [n for n, _ in MBConv(32, 64, expansion=1, se_ratio=0).named_children()] == ['conv_dw', 'bn2', 'act2',
                                                                                       'conv_pwl', 'bn3']
    assert [n for n, _ in FusedMBConv(32, 64).named_children()] == ['conv_exp', 'bn1', 'act1', 'conv_pwl', 'bn2']
    b = BasicBlock(16, 16); b.zero_init_last()
    assert b.bn2.weight.abs().sum() == 0 and b.bn1.weight.abs().sum() > 0
    assert all(BLOCKS[k].fresh_output for k in BLOCKS)


def test_bad_block():
    with pytest.raises(ValueError, match="`unit` must be one of"): residual_block('nope', 32, 32)
