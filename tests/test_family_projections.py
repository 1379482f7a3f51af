"""The shortcuts folding adds to a ResNet (skips of another shape than the block's input): they start as timm and
torchvision start their own `downsample`, in the source's norm kind, dtype and device, and the folded model's timm cfg
is its own copy. The oracles are the libraries' own fresh models, not the folding code."""
import math

import pytest, timm, torch, torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from fastai_resnetx import fold_resnet
from fastai_resnetx.model.blocks import Block
from conftest import reference_forward


def new_projections(src:nn.Module, folded:nn.Module) -> list:
    "The shortcuts of `folded` that are neither the source's own modules nor identities."
    own = {id(m) for m in src.modules()}
    return [u.shortcut for s in folded.stages for u in s
            if not isinstance(u.shortcut, nn.Identity) and id(u.shortcut) not in own]


def convs_and_norms(proj:nn.Module) -> tuple:
    return ([m for m in proj.modules() if isinstance(m, nn.Conv2d)],
            [m for m in proj.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))])


@pytest.mark.parametrize('lib', ['timm', 'torchvision'])
def test_new_projections_start_as_the_library_starts_its_own_downsample(lib):
    torch.manual_seed(0)
    src = timm.create_model('resnet18') if lib == 'timm' else torchvision.models.resnet18()
    # the oracle: the library's own init of a fresh downsample, a 1x1 conv (64 -> 128 here): kaiming normal, fan_out
    own = src.layer2[0].downsample[0].weight
    assert own.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    folded = fold_resnet(src, fold=3)
    projections = new_projections(src, folded)
    assert len(projections) >= 3
    for proj in projections:
        (conv,), (norm,) = convs_and_norms(proj)
        ni, nf = conv.in_channels, conv.out_channels
        assert nf >= 2 * ni                                 # fan_in and fan_out differ by sqrt(nf / ni) >= 1.41 here
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / nf), rel=0.05), (ni, nf)
        assert conv.weight.mean().abs().item() < 0.1 * math.sqrt(2 / nf)
        assert torch.equal(norm.weight, torch.ones(nf)) and torch.equal(norm.bias, torch.zeros(nf))
        assert torch.equal(norm.running_mean, torch.zeros(nf)) and torch.equal(norm.running_var, torch.ones(nf))
        assert (norm.eps, norm.momentum) == (src.bn1.eps, src.bn1.momentum)


def test_group_norm_sources_get_group_norm_projections_with_their_group_count():
    src = timm.create_model('resnet50_gn')
    own = src.layer2[0].downsample[1]                       # timm's own downsample norm: the oracle
    assert isinstance(own, nn.GroupNorm) and own.num_groups == 32
    projections = new_projections(src, fold_resnet(src, fold=3))
    assert projections
    for proj in projections:
        _, (norm,) = convs_and_norms(proj)
        assert isinstance(norm, nn.GroupNorm) and (norm.num_groups, norm.eps, norm.affine) == (32, own.eps, True)
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()


# fp16 convs are slow on CPU (fold_resnet checks each block on a batch): that case is in the slow set
@pytest.mark.parametrize('dtype', [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)])
def test_new_projections_take_the_dtype_of_a_half_precision_source(dtype):
    torch.manual_seed(0)
    src = timm.create_model('resnet18', num_classes=3).to(dtype).eval()
    folded = fold_resnet(src, fold=3)
    assert {p.dtype for p in folded.parameters()} == {dtype}
    assert {b.dtype for n, b in folded.named_buffers() if not n.endswith('num_batches_tracked')} == {dtype}
    if dtype == torch.bfloat16:                             # CPU convs run bf16: the folded model computes its plan
        x = torch.randn(2, 3, 32, 32).to(dtype)
        with torch.no_grad(): out, ref = folded(x), reference_forward(folded, x)
        assert out.dtype == dtype and torch.equal(out, ref)


def test_the_folded_models_timm_cfg_is_its_own_copy():
    src = timm.create_model('resnet18', layers=(1, 1, 1, 1))   # a layout no folded name has: the source's cfg
    before = dict(src.pretrained_cfg)
    folded = fold_resnet(src, fold=2)
    assert folded.pretrained_cfg == before and folded.pretrained_cfg is not src.pretrained_cfg
    folded.pretrained_cfg['mean'] = (0.5, 0.5, 0.5)
    assert src.pretrained_cfg == before                      # editing one never changes the other
    named = fold_resnet(timm.create_model('resnet18'), fold=2)
    assert named.pretrained_cfg['architecture'] == 'folded_resnet18'


def test_new_projection_norms_keep_the_sources_norm_settings():
    from functools import partial
    norm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)   # a source built with its own norm settings
    src = torchvision.models.resnet18(norm_layer=norm)
    for proj in new_projections(src, fold_resnet(src, fold=2)):
        _, (bn,) = convs_and_norms(proj)
        assert (type(bn), bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (nn.BatchNorm2d, 1e-3, 0.03, True, True)


def test_group_norm_and_batch_norm_settings_reach_the_new_projections():
    "A GroupNorm without affine and its own eps; a BatchNorm without affine or running stats: the projections match."
    src = timm.create_model('resnet18', norm_layer=lambda c, **kw: nn.GroupNorm(4, c, eps=1e-3, affine=False, **kw))
    for proj in new_projections(src, fold_resnet(src, fold=2)):
        _, (norm,) = convs_and_norms(proj)
        assert (type(norm), norm.num_groups, norm.eps, norm.affine, norm.weight) == (nn.GroupNorm, 4, 1e-3, False, None)
    norm = lambda c, **kw: nn.BatchNorm2d(c, affine=False, track_running_stats=False, **kw)   # torchvision's init needs affine
    src = timm.create_model('resnet18', norm_layer=norm)
    projections = new_projections(src, fold_resnet(src, fold=2))
    assert projections
    for proj in projections:
        _, (bn,) = convs_and_norms(proj)
        assert (bn.affine, bn.track_running_stats, bn.weight, bn.running_mean) == (False, False, None, None)


def test_frozen_norm_projections_keep_the_sources_eps():
    from torchvision.ops import FrozenBatchNorm2d
    from functools import partial
    src = torchvision.models.resnet18(norm_layer=partial(FrozenBatchNorm2d, eps=1e-3))
    new = [p for p in new_projections(src, fold_resnet(src, fold=2))]
    assert new and all(type(p[-1]) is FrozenBatchNorm2d and p[-1].eps == 1e-3 for p in new)


def test_a_norm_kind_without_projections_is_refused_by_name():
    src = torchvision.models.resnet18(norm_layer=nn.InstanceNorm2d)
    with pytest.raises(ValueError, match=r"^`model` uses the norm layer torch\.nn\.modules\.instancenorm\.InstanceNorm2d; "
                                         r"new projections can be made for BatchNorm, FrozenBatchNorm2d or GroupNorm only$"):
        fold_resnet(src, fold=2)
    fold_resnet(torchvision.models.resnet18(norm_layer=nn.InstanceNorm2d), fold=1)   # fold 1 adds no projection


def test_a_timm_models_tag_cfg_is_kept_under_its_folded_name():
    "A timm ResNet built with a tag keeps that tag's cfg (its crop, test size), not the folded name's default tag's."
    src = timm.create_model('resnet50.tv_in1k')
    default = timm.get_pretrained_cfg('resnet50').to_dict()       # the oracle: timm's cfg of the default tag differs
    assert (src.pretrained_cfg['crop_pct'], src.pretrained_cfg.get('test_input_size')) != \
        (default['crop_pct'], default.get('test_input_size'))
    folded = fold_resnet(src, fold=2)
    assert folded.pretrained_cfg == dict(src.pretrained_cfg, architecture='folded_resnet50')
    tv = fold_resnet(torchvision.models.resnet18(), fold=2)       # torchvision: no cfg of its own, the name's
    assert tv.pretrained_cfg == dict(timm.get_pretrained_cfg('folded_tv_resnet18').to_dict(),
                                     architecture='folded_tv_resnet18')
    odd = torchvision.models.resnet18()
    odd.layer1 = odd.layer1[:1]                                   # a layout no folded name has, and no cfg at all
    assert not hasattr(fold_resnet(odd, fold=2), 'pretrained_cfg') or fold_resnet(odd, fold=2).pretrained_cfg is None


@pytest.mark.parametrize('start_id, end_id, sources', [(4, None, (0, 1, 2, 2, 1, 4, 3, 6)),
                                                       (None, 5, (0, 1, 1, 0, 3, 5, 6, 7))])
def test_a_fold_window_reaches_the_folded_resnet(start_id, end_id, sources):
    "fold_resnet(..., start_id, end_id): the window's plan (the ResNetX of that layout and window has the same)."
    from fastai_resnetx import ResNetX, ResNetXConfig
    src = timm.create_model('resnet18', num_classes=3).eval()
    m = fold_resnet(src, fold=3, start_id=start_id, end_id=end_id)
    native = ResNetX(ResNetXConfig((2, 2, 2, 2), 'basic', fold=3, start_id=start_id, end_id=end_id))
    assert tuple(m.plan.sources) == tuple(native.plan.sources) == sources
    assert (m.cfg.start_id, m.cfg.end_id) == (start_id, end_id)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): assert (m(x) - reference_forward(m, x)).abs().max() <= 1e-5


@pytest.mark.parametrize('name, want', [
    ('resnet18', dict(num_units=(2, 2, 2, 2), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2), stem='resnet',
                      stem_width=64, shortcut='conv', in_chans=3, num_classes=7, global_pool='avg')),
    ('resnet26d', dict(num_units=(2, 2, 2, 2), widths=(256, 512, 1024, 2048), strides=(1, 2, 2, 2), stem='deep',
                       stem_width=32, shortcut='avgpool', in_chans=3, num_classes=7, global_pool='avg')),  # 2 x 16
    ('tv:resnet34', dict(num_units=(3, 4, 6, 3), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2), stem='resnet',
                         stem_width=64, shortcut='conv', in_chans=3, num_classes=7, global_pool='avg'))])
def test_the_folded_models_config_describes_the_source(name, want):
    "By hand from the archs' definitions: the layout, widths, strides, stem, shortcut kind, unit class and activation."
    src = (torchvision.models.get_model(name[3:], num_classes=7) if name.startswith('tv:')
           else timm.create_model(name, num_classes=7, drop_path_rate=0.1, stem_width=16 if 'd' in name else 64))
    cfg = fold_resnet(src, fold=2, end_id=5).cfg
    assert {k: getattr(cfg, k) for k in want} == want
    assert (cfg.fold, cfg.end_id, cfg.unit, cfg.act) == (2, 5, type(src.layer1[0]), nn.ReLU)
    assert cfg.drop_path_rate == (0. if name.startswith('tv:') else pytest.approx(0.1))   # timm's last block has the rate
    dilated = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])   # layer3, layer4 dilated
    assert fold_resnet(dilated, fold=2).cfg.strides == (1, 2, 1, 1)
    grey = fold_resnet(timm.create_model('resnet10t', in_chans=1, global_pool='max', num_classes=4), fold=2).cfg
    assert (grey.in_chans, grey.global_pool, grey.num_classes) == (1, 'max', 4)   # a grey, max-pooled source


def test_the_source_heads_dropout_is_kept():
    "timm's `drop_rate` (dropout before the classifier) acts the same in the folded model: same draws, same logits."
    src = timm.create_model('resnet10t', num_classes=5, drop_rate=0.5).train()
    folded, x = fold_resnet(src, fold=1), torch.randn(4, 3, 32, 32)
    assert folded.cfg.drop_rate == 0.5
    outs = []
    for m in (src, folded):
        torch.manual_seed(0)
        outs.append(m(x))
    assert torch.equal(outs[0], outs[1])                   # the same dropout mask applied (fold 1 = the source)
    folded.eval()
    assert not torch.allclose(outs[0], folded(x))          # and training-mode dropout did change the logits


def test_a_resnet_of_mixed_block_kinds_folds_and_its_config_names_no_one_kind():
    "A user's ResNet-18 whose layer4 is two Bottlenecks: fold 1 computes the same, and the config's unit is `Block`."
    torch.manual_seed(0)
    src = torchvision.models.resnet18(num_classes=3)
    down = nn.Sequential(nn.Conv2d(256, 512, 1, 2, bias=False), nn.BatchNorm2d(512))
    src.layer4 = nn.Sequential(Bottleneck(256, 128, 2, down), Bottleneck(512, 128))   # 4 x 128 = 512 out, as before
    src.eval()
    x = torch.randn(2, 3, 64, 64)
    folded = fold_resnet(src, fold=1).eval()
    assert torch.equal(folded(x), src(x))
    assert folded.cfg.unit is Block and fold_resnet(torchvision.models.resnet18(), fold=2).cfg.unit is BasicBlock
