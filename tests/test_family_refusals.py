"fold_resnet keeps every layer it does not fold, or refuses in one line naming the block: never a smaller model."
import pytest, timm, torch, torchvision
from torch import nn

from fastai_resnetx import fold_resnet


def test_a_layer_added_to_a_block_is_refused_not_dropped():
    m = timm.create_model('resnet10t', num_classes=5)
    m.layer2[0].extra = nn.Conv2d(128, 128, 1)            # a new child the block's known layers do not list
    with pytest.raises(ValueError, match=r"block layer2\.0 \(timm\.models\.resnet\.BasicBlock\) has the layer 'extra'"):
        fold_resnet(m, fold=2)


def test_a_renamed_layer_is_refused():
    m = timm.create_model('seresnet18', num_classes=5)
    blk = m.layer1[0]
    blk.squeeze = blk.se                                   # `se` renamed: timm's forward would not find it
    del blk.se
    with pytest.raises(ValueError, match=r"block layer1\.0 .* has the layer 'squeeze'"): fold_resnet(m)


def test_a_forward_patched_on_one_block_is_refused():
    m = torchvision.models.resnet18(num_classes=5)
    b = m.layer3[1]
    b.forward = lambda x, b=b: type(b).forward(b, x) * 2
    with pytest.raises(ValueError, match=r"block layer3\.1 has a forward of its own"): fold_resnet(m)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_a_changed_block_class_forward_is_caught_on_a_random_batch(monkeypatch, dtype):
    "In the model's own dtype too: a bf16 model is checked on a bf16 batch (an fp32 batch could not run, so no check)."
    m = timm.create_model('resnet10t', num_classes=5).to(dtype).eval()
    cls = type(m.layer1[0])
    real = cls.forward
    monkeypatch.setattr(cls, 'forward', lambda self, x: real(self, x) + 1)   # what a new timm release could do
    with pytest.raises(ValueError, match=r"block layer1\.0 .* computes something else than its layers folded"):
        fold_resnet(m)



@pytest.mark.parametrize('change, words', [
    (lambda real: lambda self, x: real(self, x) * 1.5, r"largest difference [0-9.]+ on a random batch"),   # relative
    (lambda real: lambda self, x: real(self, x)[:, :, :-1], r"largest difference nan on a random batch")])  # a shape
def test_a_changed_forward_is_named_with_its_class_and_largest_difference(monkeypatch, change, words):
    m = timm.create_model('resnet10t', num_classes=5).eval()
    cls = type(m.layer1[0])
    monkeypatch.setattr(cls, 'forward', change(cls.forward))
    with pytest.raises(ValueError, match=r"^`model`'s block layer1\.0 \(timm\.models\.resnet\.BasicBlock\) computes "
                                         r"something else than its layers folded \(" + words):
        fold_resnet(m)


def test_a_plus_one_forward_is_off_by_exactly_one():
    "The message's number is the largest difference: a forward that adds 1 after the activation is off by 1."
    m = timm.create_model('resnet10t', num_classes=5).eval()
    cls = type(m.layer1[0])
    real = cls.forward
    try:
        cls.forward = lambda self, x: real(self, x) + 1
        with pytest.raises(ValueError, match=r"\(largest difference 1 on a random batch\)"): fold_resnet(m)
    finally: cls.forward = real


def test_an_empty_stage_and_an_unknown_block_are_refused_by_name():
    m = timm.create_model('resnet10t')
    m.layer3 = nn.Sequential()
    with pytest.raises(ValueError, match=r"^`model` has an empty layer3 \(pruned with prune_intermediate_layers\?\): "
                                         r"fold the whole ResNet$"):
        fold_resnet(m)

    class MyBlock(nn.Module):
        def forward(self, x): return x
    m = torchvision.models.resnet18()
    m.layer2[1] = MyBlock()
    allowed = ("['timm.models.resnet.BasicBlock', 'timm.models.resnet.Bottleneck', "
               "'torchvision.models.resnet.BasicBlock', 'torchvision.models.resnet.Bottleneck']")
    with pytest.raises(ValueError) as e: fold_resnet(m)
    assert str(e.value) == (f"`model` has a block of class {MyBlock.__module__}.MyBlock in layer2; allowed: {allowed}")


def test_a_refused_model_is_left_in_its_modes():
    "The blocks checked before a refusal go back to training mode: the user's model is as it was."
    m = timm.create_model('resnet10t', num_classes=5).train()
    m.layer4[0].extra = nn.Identity()                       # refused at the last block, after the others were checked
    with pytest.raises(ValueError, match=r"block layer4\.0 .* has the layer 'extra'"): fold_resnet(m, fold=2)
    assert all(mod.training is True for mod in m.modules())
    m.eval()
    with pytest.raises(ValueError): fold_resnet(m, fold=2)
    assert all(mod.training is False for mod in m.modules())


def test_pooling_is_the_sources_and_a_sequential_head_counts_its_classes():
    m = torchvision.models.resnet18()
    m.avgpool = nn.AdaptiveMaxPool2d(1)
    with pytest.raises(ValueError, match=r"`model.avgpool` is AdaptiveMaxPool2d"): fold_resnet(m)
    m = torchvision.models.resnet18()
    m.fc = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))
    f = fold_resnet(m.eval())
    assert f.num_classes == 10 and f(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_adaptive_pool_to_one_folds_and_to_two_is_refused():
    "`AdaptiveAvgPool2d(1)` is the pooling torchvision builds as `(1, 1)`: folded as it is; a 2x2 pool would change it."
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m = torchvision.models.resnet18(num_classes=5).eval()
    m.avgpool = nn.AdaptiveAvgPool2d(1)
    with torch.no_grad(): ref = m(x)
    with torch.no_grad(): assert (fold_resnet(m)(x) - ref).abs().max() <= 1e-5
    m = torchvision.models.resnet18()
    m.avgpool = nn.AdaptiveAvgPool2d(2)
    with pytest.raises(ValueError, match=r"`model.avgpool` is AdaptiveAvgPool2d\(output_size=2\), not torchvision's"):
        fold_resnet(m)


def test_a_resnet_without_a_classifier_folds_to_features():
    "`model.fc = nn.Identity()` (a feature extractor): the folded model has 0 classes and gives the 512 features."
    m = torchvision.models.resnet18().eval()
    m.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): ref = m(x)
    f = fold_resnet(m)
    with torch.no_grad(): out = f(x)
    assert f.num_classes == 0 and out.shape == (2, 512) and (out - ref).abs().max() <= 1e-5


def test_detection_backbones_with_frozen_norms_fold_and_new_projections_stay_identity_norms():
    "torchvision's detection models build their ResNet with FrozenBatchNorm2d: folded, new projections take that kind."
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d
    from conftest import randomise, reference_forward
    src = randomise(torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): ref = src(x)
    m = fold_resnet(src, fold=2)
    own = {id(b.downsample) for layer in (src.layer2, src.layer3, src.layer4) for b in layer if b.downsample is not None}
    new = [u.shortcut for u in m.units if isinstance(u.shortcut, nn.Sequential) and id(u.shortcut) not in own]
    assert len(new) >= 2 and all(type(p[-1]) is FrozenBatchNorm2d for p in new)
    assert all(torch.equal(p[-1].weight, torch.ones_like(p[-1].weight)) and not p[-1].running_var.ne(1).any()
               and not any(True for _ in p[-1].parameters()) for p in new)        # identity, and frozen: no parameters
    with torch.no_grad():
        assert (m(x) - reference_forward(m, x)).abs().max() <= 1e-5
        assert (fold_resnet(randomise(torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d)))(x) - ref).abs().max() <= 1e-5


def test_folded_tv_takes_timms_factory_arguments():
    "device, dtype and output_stride (torchvision's replace_stride_with_dilation), as timm's own ResNets take them."
    import torchvision
    from conftest import randomise
    assert {p.device.type for p in timm.create_model('folded_tv_resnet18', device='meta', fold=2).parameters()} == {'meta'}
    assert {p.dtype for p in timm.create_model('folded_tv_resnet18', dtype=torch.bfloat16, fold=2).parameters()} == {
        torch.bfloat16}
    m = randomise(timm.create_model('folded_tv_resnet50', output_stride=16, num_classes=3))
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True])   # torchvision's own dilation
    want = [(b.conv2.stride, b.conv2.dilation) for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4) for b in layer]
    assert [(u.branch.conv2.stride, u.branch.conv2.dilation) for u in m.units] == want
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): assert m.forward_features(x).shape == (1, 2048, 4, 4)   # 64 / 16
    assert timm.create_model('folded_tv_resnet50', output_stride=8).forward_features(x).shape[-1] == 8
    with pytest.raises(ValueError, match=r"`output_stride` 16: torchvision's resnet18 \(BasicBlock\) cannot dilate"):
        timm.create_model('folded_tv_resnet18', output_stride=16)


@pytest.mark.parametrize('name, unit, names', [
    ('resnet18', 0, ['conv1', 'bn1', 'act1', 'conv2', 'bn2']),            # timm: drop_block and aa Identity, se None
    ('seresnet18', 0, ['conv1', 'bn1', 'act1', 'conv2', 'bn2', 'se']),
    ('resnetblur18', 2, ['conv1', 'bn1', 'act1', 'aa', 'conv2', 'bn2']),  # layer2.0's anti-aliasing: a real layer, kept
    ('resnetblur18', 0, ['conv1', 'bn1', 'act1', 'conv2', 'bn2']),        # (stride 1: aa is Identity)
    ('tv:resnet18', 0, ['conv1', 'bn1', 'act1', 'conv2', 'bn2'])])         # torchvision's one `relu` as act1
def test_a_units_branch_holds_the_blocks_real_layers_in_forward_order(name, unit, names):
    "By hand from timm's and torchvision's BasicBlock: the no-op layers (Identity, None) are left out, the rest kept."
    src = torchvision.models.resnet18() if name == 'tv:resnet18' else timm.create_model(name)
    folded = fold_resnet(src, fold=2)
    assert [n for n, _ in folded.units[unit].branch.named_children()] == names
