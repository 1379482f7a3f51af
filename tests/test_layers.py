"model/layers.py: conv-norm-act, the residual add, projections and stems, against torch, torchvision and timm."
import pytest, timm, torch, torchvision
from torch import nn
from fastai_resnetx import ConvNormAct, Conv1x1NormAct, Conv3x3NormAct, ResidualAdd, num_params
from fastai_resnetx.model.layers import projection, resnet_stem, deep_stem, get_act, act_layer, Conv1x1Gemm

x = torch.randn(1, 32, 56, 56)


def test_conv_norm_act():
    m = Conv3x3NormAct(32, 64)
    assert m(x).shape == (1, 64, 56, 56)
    assert m[0].bias is None and isinstance(m[1], nn.BatchNorm2d) and isinstance(m[2], nn.ReLU)
    assert num_params(m) == 32 * 64 * 9 + 2 * 64
    assert Conv1x1NormAct(32, 64, stride=2)(x).shape == (1, 64, 28, 28)
    for ks in (1, 3, 5, 7): assert ConvNormAct(32, 8, ks)(x).shape == (1, 8, 56, 56)   # same padding
    assert ConvNormAct(32, 8, act=None, norm=None)[0].bias is not None                 # bias only without norm
    with pytest.raises(ValueError, match='ks'): ConvNormAct(32, 8, 4)
    with pytest.raises(ValueError, match='groups'): ConvNormAct(32, 8, groups=3)


def test_residual_add():
    assert ResidualAdd(nn.Conv2d(32, 32, 1))(x).shape == (1, 32, 56, 56)
    block = nn.Conv2d(32, 32, 1)
    assert torch.allclose(ResidualAdd(block)(x), block(x) + x)
    assert ResidualAdd(nn.Conv2d(32, 64, 1), shortcut=nn.Conv2d(32, 64, 1))(x).shape == (1, 64, 56, 56)


def load_same(ours:nn.Module, theirs:nn.Module):
    "Copy `theirs`' tensors into `ours` in order (same shapes), with random norm statistics so no layer is a no-op."
    for t in list(theirs.parameters()) + [b for n, b in theirs.named_buffers() if 'running' in n]:
        with torch.no_grad(): t.copy_(torch.rand_like(t) + 0.5 if t.dim() == 1 else torch.randn_like(t) * 0.1)
    src, dst = list(theirs.state_dict().values()), ours.state_dict()
    assert [tuple(t.shape) for t in src] == [tuple(t.shape) for t in dst.values()]
    ours.load_state_dict(dict(zip(dst, src)))
    return ours.eval(), theirs.eval()


def test_resnet_stem_is_torchvisions():
    tv = torchvision.models.resnet18()
    theirs = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)
    ours, theirs = load_same(nn.Sequential(resnet_stem()), theirs)
    assert list(ours._modules) == ['conv1', 'bn1', 'act1', 'maxpool']
    x = torch.randn(2, 3, 61, 61)                          # odd size: the same padding and rounding
    with torch.no_grad(): assert torch.equal(ours(x), theirs(x)) and ours(x).shape == (2, 64, 16, 16)


def test_projections_are_torchvisions_and_timms_downsample():
    # 'conv': torchvision's downsample (1x1 conv with the stride, norm); a strided slice + matmul gives the same
    tv = torchvision.models.resnet50().layer2[0].downsample
    ours, tv = load_same(projection(256, 512, 2), tv)
    x = torch.randn(2, 256, 15, 15)
    with torch.no_grad(): assert (ours(x) - tv(x)).abs().max() <= 1e-5
    assert isinstance(ours[0], Conv1x1Gemm) and ours(x).shape == (2, 512, 8, 8)
    # 'avgpool': timm's avg_down downsample of resnet50d (avg-pool, 1x1 conv, norm), odd sizes rounded up
    timm_ds = timm.create_model('resnet50d').layer2[0].downsample
    ours, timm_ds = load_same(projection(256, 512, 2, kind='avgpool'), timm_ds)
    with torch.no_grad(): assert (ours(x) - timm_ds(x)).abs().max() <= 1e-5
    assert isinstance(projection(64, 64), nn.Identity) and len(projection(64, 128, kind='avgpool')) == 2   # no pool
    with pytest.raises(ValueError, match="`kind` must be 'conv' or 'avgpool', got 'max'"): projection(8, 16, 2, 'max')


def test_deep_stem_is_fastais_xresnet_stem():
    from fastai.vision.models.xresnet import xresnet18
    fa = xresnet18()
    ours, theirs = load_same(nn.Sequential(deep_stem()), nn.Sequential(*list(fa.children())[:4]))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert (ours(x) - theirs(x)).abs().max() <= 1e-5
    assert [c.out_channels for c in ours.modules() if isinstance(c, nn.Conv2d)] == [32, 32, 64]


def test_activations_by_name():
    assert get_act('relu') is nn.ReLU and get_act('silu') is nn.SiLU and get_act(None) is None
    assert isinstance(act_layer('relu'), nn.ReLU) and act_layer('relu').inplace        # in place where it can be
    with pytest.raises(ValueError, match='act'): get_act('nope')


def test_conv_norm_act_passes_every_argument_on():
    m = ConvNormAct(8, 16, ks=5, stride=2, groups=2, dilation=2)
    c = m[0]
    assert (c.kernel_size, c.stride, c.groups, c.dilation, c.padding) == ((5, 5), (2, 2), 2, (2, 2), (4, 4))
    assert isinstance(m[2], nn.ReLU) and m[2].inplace                            # in place, as torchvision's ResNet
    assert isinstance(ConvNormAct(8, 16, act='silu')[2], nn.SiLU) and ConvNormAct(8, 16, act='silu')[2].inplace
    gelu = ConvNormAct(8, 16, act=nn.GELU)[2]                                   # takes no `inplace`
    assert type(gelu) is nn.GELU and len(ConvNormAct(8, 16, act=None)) == 2


def test_squeeze_excitation_widths_and_activation():
    from fastai_resnetx.model.layers import SqueezeExcitation
    se = SqueezeExcitation(16)
    assert (se.fc1.out_channels, se.fc2.out_channels) == (4, 16) and isinstance(se.activation, nn.SiLU)
    assert SqueezeExcitation(16, squeeze_from=8, se_ratio=0.5).fc1.out_channels == 4
    assert SqueezeExcitation(2).fc1.out_channels == 1                           # int(0.5) = 0: at least one channel
    assert isinstance(SqueezeExcitation(16, act='relu').activation, nn.ReLU)


def test_conv_norm_act_pairs_by_hand():
    from fastai_resnetx.model.layers import conv_norm_act
    layers = conv_norm_act(('c', 'n', 'a'), 4, 8)
    assert [n for n, _ in layers] == ['c', 'n', 'a']
    c = layers[0][1]
    assert (c.kernel_size, c.stride, c.padding, c.dilation, c.bias) == ((3, 3), (1, 1), (1, 1), (1, 1), None)
    c = conv_norm_act(('c', 'n', 'a'), 4, 8, ks=5, dilation=3)[0][1]
    assert (c.padding, c.dilation) == ((6, 6), (3, 3))                          # same padding: dilation * (ks // 2)
    assert conv_norm_act(('c', 'n', 'a'), 4, 8, ks=5)[0][1].padding == (2, 2)
    assert [n for n, _ in conv_norm_act(('c', 'n', 'a'), 4, 8, act=None)] == ['c', 'n']


def test_stems_by_hand():
    from fastai_resnetx.model.layers import small_stem
    s = small_stem()
    assert s['conv1'].weight.shape == (64, 3, 3, 3) and s['conv1'].stride == (1, 1) and s['conv1'].bias is None
    assert isinstance(s['maxpool'], nn.Identity) and s['bn1'].num_features == 64
    d = deep_stem(c_in=1, nf=16, act=nn.SiLU, norm=nn.InstanceNorm2d)
    first, second, last = d['conv1']
    assert (first[0].in_channels, first[0].out_channels, second[0].out_channels, last.out_channels) == (1, 16, 16, 16)
    assert second[0].kernel_size == (3, 3) and last.bias is None
    assert all(isinstance(m[1], nn.InstanceNorm2d) and isinstance(m[2], nn.SiLU) for m in (first, second))
    assert deep_stem(nf=64)['conv1'][0][0].out_channels == 32                   # nf // 2, at least 16


def test_activation_modules_and_the_groups_check():
    from fastai_resnetx.model.layers import _takes_inplace
    assert type(act_layer('gelu')) is nn.GELU and isinstance(act_layer(None), nn.Identity)   # GELU takes no inplace
    assert _takes_inplace(torch.tanh) is False                                   # no signature to read: not in place
    with pytest.raises(ValueError, match=r"`groups` \(3\) must divide `ni` \(6\) and `nf` \(8\)"): ConvNormAct(6, 8, groups=3)
    with pytest.raises(ValueError, match=r"`groups` \(3\) must divide `ni` \(8\) and `nf` \(6\)"): ConvNormAct(8, 6, groups=3)


@pytest.mark.parametrize('stride', [(2, 1), (1, 2), (2, 2), (1, 1)])
def test_the_matmul_1x1_conv_is_torchs_conv_at_every_stride(stride):
    from fastai_resnetx.model.layers import conv1x1_gemm
    x, w, b = torch.randn(2, 4, 7, 6), torch.randn(8, 4, 1, 1), torch.randn(8)
    want = nn.functional.conv2d(x, w, b, stride)
    assert (conv1x1_gemm(x, w, b, stride) - want).abs().max() < 1e-5          # eager CPU: the slice and the matmul
    # under vmap the conv itself runs (the matmul form is for eager CPU only), with the bias
    got = torch.func.vmap(lambda xi: conv1x1_gemm(xi[None], w, b, stride)[0])(x)
    assert (got - want).abs().max() < 1e-5
