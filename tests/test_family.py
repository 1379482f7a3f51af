"Folding timm's and torchvision's ResNet families: exact at fold 1 on every arch, trainable and wired by the plan at folds 2-3."
import re, time

import pytest, timm, torch, torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from fastai_resnetx import ResNetX, get_pred, num_params
from fastai_resnetx.model.family import fold_resnet

TIMM_ARCHS = timm.list_models(module='resnet')   # every arch of timm's resnet.py: a new one is covered automatically
TV_ARCHS = [n for n in torchvision.models.list_models(module=torchvision.models) if re.match(r'(resnet|resnext|wide_resnet)\d', n)]
QUICK = ['test_resnet', 'resnet10t', 'resnet18d', 'resnetaa34d', 'resnetblur18', 'tv:resnet18']   # the CI subset


class _SkipInit(TorchFunctionMode):
    "In-place random/fill init ops do nothing: building a 468M-parameter ResNeXt then costs its allocation only."
    SKIP = {getattr(torch.Tensor, n) for n in ('normal_', 'uniform_', 'zero_', 'fill_', 'erfinv_', 'exponential_')}
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SKIP: return args[0]
        return func(*args, **(kwargs or {}))


def _fill(model:nn.Module, seed:int=0) -> nn.Module:
    "Seeded small weights and BatchNorm statistics (cheaply: slices of one random pool), in eval mode."
    pool = torch.rand(1 << 20, generator=torch.Generator().manual_seed(seed))
    twice = torch.cat([pool, pool])
    def vals(n, i):   # n values starting at a place that differs from tensor to tensor
        if n > pool.numel(): return pool.repeat(n // pool.numel() + 1)[:n]
        start = (i * 7919) % pool.numel()
        return twice[start:start + n]
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            v = vals(p.numel(), i).view_as(p)
            if p.dim() > 1: p.copy_((2 * v - 1) * (3 / p[0].numel()) ** 0.5)   # uniform, variance 1/fan_in
            else: p.copy_(0.5 + 0.5 * v if name.endswith('weight') else 0.2 * (v - 0.5))
        for i, (name, b) in enumerate(model.named_buffers()):
            if name.endswith('running_mean'): b.copy_(0.2 * (vals(b.numel(), i) - 0.5))
            elif name.endswith('running_var'): b.copy_(0.5 + vals(b.numel(), i))
            elif name.endswith('num_batches_tracked'): b.zero_()
    return model.eval()


def build(name:str, init:bool=False, **kwargs) -> nn.Module:
    "timm's arch `name` (or torchvision's, as 'tv:NAME') with seeded random weights (init skipped unless `init`), in eval mode."
    if init:
        torch.manual_seed(0)
        if name.startswith('tv:'): return torchvision.models.get_model(name[3:], weights=None, **kwargs).eval()
        return timm.create_model(name, pretrained=False, **kwargs).eval()
    with _SkipInit():
        if name.startswith('tv:'): model = torchvision.models.get_model(name[3:], weights=None, **kwargs)
        else: model = timm.create_model(name, pretrained=False, **kwargs)
    return _fill(model)


def check_exact(name:str, size:int=32):
    "At fold 1: the same parameters (the very tensors), the same count and logits within 1e-5."
    src = build(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): ref = src(x)
    params, n = {id(p) for p in src.parameters()}, num_params(src)
    m = fold_resnet(src)
    assert isinstance(m, ResNetX) and not m.training
    assert num_params(m) == n and {id(p) for p in m.parameters()} == params   # moved, not copied; nothing new
    with torch.no_grad(): out = m(x)
    assert torch.isfinite(ref).all() and ref.abs().max() > 1e-3   # a live network, not zeros
    assert (out - ref).abs().max() <= 1e-5, f'{name}: {(out - ref).abs().max()}'


def test_arch_lists():
    assert len(TIMM_ARCHS) >= 81 and len(TV_ARCHS) >= 9 and 'resnext50_32x4d' in TV_ARCHS


@pytest.mark.parametrize('name', QUICK)
def test_fold1_exact_quick(name): check_exact(name)


@pytest.mark.slow
def test_fold1_exact_every_arch():
    "Every arch of timm's resnet.py and torchvision's ResNet builders: exact at fold 1 (one test: ~1 min on 1 core)."
    start, failed = time.time(), {}
    for name in TIMM_ARCHS + [f'tv:{n}' for n in TV_ARCHS]:
        try: check_exact(name)
        except AssertionError as e: failed[name] = str(e)
    print(f'{len(TIMM_ARCHS) + len(TV_ARCHS) - len(failed)}/{len(TIMM_ARCHS) + len(TV_ARCHS)} exact in '
          f'{time.time() - start:.0f} s')
    assert not failed, failed


def reference_forward(m:ResNetX, x, keep:bool=False):
    "An obviously correct forward from the unit table: every output kept, skip sources from the seed's `get_pred`."
    plan = m.plan
    out = {0: m.maxpool(m.act1(m.bn1(m.conv1(x))))}
    for l, unit in enumerate(m.units, start=1):
        src = get_pred(l, plan.fold, plan.start_id, plan.end_id)
        out[l] = unit.act(unit.branch(out[l - 1]) + unit.shortcut(out[src]))   # out of place, nothing shared
    logits = m.fc(m.global_pool(out[plan.n_units]))
    return (logits, out) if keep else logits


# SE, ECA, ResNeXt groups, d stem + avg_down, anti-aliasing, GroupNorm, basic blocks, torchvision's ResNeXt
AVG_DOWN = ['seresnext26d_32x4d', 'ecaresnet26t', 'resnetaa34d']
SAMPLE = ['seresnext26d_32x4d', 'ecaresnet26t', 'resnetaa34d', 'resnet50_gn', 'resnet18', 'tv:resnext50_32x4d']

@pytest.mark.parametrize('name', SAMPLE)
@pytest.mark.parametrize('fold', [2, 3])
def test_folds_match_reference_and_train(name, fold):
    src = build(name, num_classes=3)
    m = fold_resnet(src, fold=fold).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert any(s < l - 1 for l, s in enumerate(m.plan.sources, start=1))
    with torch.no_grad(): assert (m(x) - reference_forward(m, x)).abs().max() <= 1e-5
    # the rule: a skip of the block's input shape uses the block's own downsample (or none); another shape a new
    # projection of the family's kind (avg-pool first for the 'd' variants), from the skip's channels
    blocks = [b for layer in (src.layer1, src.layer2, src.layer3, src.layer4) for b in layer]
    with torch.no_grad(): _, outs = reference_forward(m, x, keep=True)
    for l, (u, b) in enumerate(zip(m.units, blocks), start=1):
        s = get_pred(l, fold)
        if outs[s].shape == outs[l - 1].shape: assert u.shortcut is (b.downsample or u.shortcut) and (
            b.downsample is not None or isinstance(u.shortcut, nn.Identity))
        else:
            conv = next(c for c in u.shortcut if isinstance(c, nn.Conv2d))
            assert conv.in_channels == outs[s].shape[1] and conv.out_channels == outs[l].shape[1]
            stride = outs[s].shape[-1] // outs[l].shape[-1]
            pooled = isinstance(u.shortcut[0], nn.AvgPool2d)
            assert (pooled, conv.stride[0]) == ((stride > 1, 1) if name in AVG_DOWN else (False, stride))
    # training starts from the family's own init (the filled weights are for the numeric check), new projections ours
    m = fold_resnet(build(name, num_classes=3, init=True), fold=fold).train()
    opt, y = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), torch.tensor([0, 1])
    losses = []
    for _ in range(6):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
