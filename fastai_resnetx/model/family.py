"""Fold any ResNet: a built torchvision or timm ResNet becomes a ResNetX whose units are the model's own blocks.

Each block's residual add is taken out: its layers up to the add become the unit's branch (a `Block` of the block's own
submodules), its `downsample` the unit's shortcut, its last activation the unit's activation. The stem, pooling and
classifier are the source's modules too. Modules are moved, not copied: the ResNetX holds the very parameters (and
whatever weights they hold), so the source model must not be used afterwards. A fold that needs a skip the source does
not have (an earlier output of another shape) gets a new projection of the family's own kind (see `new_projection`)."""
import timm, torch
from torch import nn
from timm.layers import SelectAdaptivePool2d, get_device_dtype

from .blocks import Block
from .config import ResNetXConfig
from .layers import projection
from .resnetx import FoldUnit, ResNetX
from .topology import fold_plan

__all__ = ['fold_resnet', 'resnet_family', 'new_projection', 'FAMILY_BLOCKS']

# The layers of each block class before its residual add, in the order its `forward` runs them (None: absent,
# Identity: a no-op, both left out), and its activation after the add. torchvision's blocks call one `relu` everywhere.
FAMILY_BLOCKS = {
    'timm.models.resnet.Bottleneck': (('conv1', 'bn1', 'act1', 'conv2', 'bn2', 'drop_block', 'act2', 'aa', 'conv3',
                                       'bn3', 'se'), 'act3'),
    'timm.models.resnet.BasicBlock': (('conv1', 'bn1', 'drop_block', 'act1', 'aa', 'conv2', 'bn2', 'se'), 'act2'),
    'torchvision.models.resnet.Bottleneck': ((('conv1', 'conv1'), ('bn1', 'bn1'), ('act1', 'relu'), ('conv2', 'conv2'),
                                              ('bn2', 'bn2'), ('act2', 'relu'), ('conv3', 'conv3'), ('bn3', 'bn3')),
                                             'relu'),
    'torchvision.models.resnet.BasicBlock': ((('conv1', 'conv1'), ('bn1', 'bn1'), ('act1', 'relu'), ('conv2', 'conv2'),
                                              ('bn2', 'bn2')), 'relu'),
}
_FAMILIES = ('timm.models.resnet.ResNet', 'torchvision.models.resnet.ResNet')


def _qualname(obj) -> str: return f'{type(obj).__module__}.{type(obj).__name__}'


def resnet_family(model:nn.Module) -> str:
    "'timm' or 'torchvision': which ResNet family `model` is (a ValueError for anything else)."
    name = _qualname(model)
    if name not in _FAMILIES:
        raise ValueError(f"`model` must be a built timm ResNet (timm.models.resnet.ResNet) or torchvision ResNet "
                         f"(torchvision.models.resnet.ResNet: resnet*, resnext*, wide_resnet*), got {name}")
    return name.split('.')[0]


def _blocks(model) -> list:
    "The blocks of each stage (`layer1..layer4`), checked to be blocks this module knows."
    stages = [list(getattr(model, f'layer{s}')) for s in range(1, 5)]
    for s, blocks in enumerate(stages, start=1):
        if not blocks: raise ValueError(f"`model` has an empty layer{s} (pruned with prune_intermediate_layers?): fold "
                                        f"the whole ResNet")
        for b in blocks:
            if _qualname(b) not in FAMILY_BLOCKS:
                raise ValueError(f"`model` has a block of class {_qualname(b)} in layer{s}; allowed: "
                                 f"{sorted(FAMILY_BLOCKS)}")
    return stages


# children a block may hold besides its branch layers and its activation after the add: the skip's `downsample`, and
# timm's stochastic depth (`drop_path`, which `FoldUnit` takes over at the same rate)
_OTHER_CHILDREN = ('downsample', 'drop_path')


def _check_consumed(block, where:str):
    "Refuse a block whose forward is its own or that holds a child folding would leave out (it would be lost)."
    names, act = FAMILY_BLOCKS[_qualname(block)]
    known = {n if isinstance(n, str) else n[1] for n in names} | {act, *_OTHER_CHILDREN}
    extra = [n for n, _ in block.named_children() if n not in known]
    if extra:
        raise ValueError(f"`model`'s block {where} ({_qualname(block)}) has the layer {extra[0]!r}, which fold_resnet "
                         f"does not know where to put: folding would drop it; allowed children: {sorted(known)}")
    if 'forward' in vars(block):
        raise ValueError(f"`model`'s block {where} has a forward of its own (patched on the instance): fold_resnet "
                         f"cannot know what it computes")


def _check_unit(block, unit, where:str):
    "The unit at fold 1 computes what the block does, on a small random batch (eval mode; nothing is changed)."
    conv1 = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
    p = conv1.weight
    if p.device.type == 'meta': return
    x = torch.randn(2, conv1.in_channels, 4, 4, device=p.device, dtype=p.dtype)   # 4 px: enough for any stride
    modes = [m.training for m in block.modules()]
    try:
        block.eval()
        with torch.no_grad():
            try: want = block(x)
            except (RuntimeError, NotImplementedError): return   # the source itself cannot run here (a half CPU op)
            got = unit(x, x)
    finally:
        for m, mode in zip(block.modules(), modes): m.training = mode
    if want.shape != got.shape or not torch.allclose(want.float(), got.float(), rtol=1e-3, atol=1e-4):
        diff = float((want.float() - got.float()).abs().max()) if want.shape == got.shape else float('nan')
        raise ValueError(f"`model`'s block {where} ({_qualname(block)}) computes something else than its layers "
                         f"folded (largest difference {diff:.3g} on a random batch): its forward was changed; "
                         f"fold_resnet refuses rather than fold it wrong")


def _branch(block) -> Block:
    "The block's layers before its residual add, as a `Block` of its own submodules (no copy)."
    names, _ = FAMILY_BLOCKS[_qualname(block)]
    pairs = [(n, n) if isinstance(n, str) else n for n in names]
    layers = [(new, getattr(block, old, None)) for new, old in pairs]
    return Block(*[(n, m) for n, m in layers if m is not None and not isinstance(m, nn.Identity)])


def _post_act(block) -> nn.Module: return getattr(block, FAMILY_BLOCKS[_qualname(block)][1])


def _out_chans(block) -> int:
    "Output channels of a block: its last conv's."
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _norm_like(norm:nn.Module):
    "A function `channels -> norm layer` of the same kind and settings as `norm` (BatchNorm or GroupNorm)."
    if isinstance(norm, nn.GroupNorm):
        return lambda c: nn.GroupNorm(norm.num_groups, c, eps=norm.eps, affine=norm.affine)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return lambda c: nn.BatchNorm2d(c, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                                        track_running_stats=norm.track_running_stats)
    if type(norm).__name__ == 'FrozenBatchNorm2d':   # torchvision's (its detection backbones) or timm's: new ones
        return lambda c: type(norm)(c, eps=norm.eps)   # start as identity (weight 1, bias 0, mean 0, var 1), stay so
    raise ValueError(f"`model` uses the norm layer {_qualname(norm)}; new projections can be made for BatchNorm, "
                     f"FrozenBatchNorm2d or GroupNorm only")


def new_projection(ni:int, nf:int, stride:int, kind:str, norm) -> nn.Module:
    "A shortcut the source lacks, `kind` 'avgpool' (avg-pool, 1x1 conv, norm: ResNet-D) or 'conv' (strided 1x1, norm)."
    proj = projection(ni, nf, stride, kind=kind, norm=norm)
    for m in proj.modules():   # the init timm's and torchvision's ResNets give their own `downsample`
        if isinstance(m, nn.Conv2d): nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return proj


def _shortcut_kind(stages) -> str:
    "'avgpool' where the family's own shortcuts average-pool (ResNet-D, `avg_down`), else 'conv'."
    pools = [m for blocks in stages for b in blocks if b.downsample is not None for m in b.downsample.modules()]
    return 'avgpool' if any(isinstance(m, nn.AvgPool2d) for m in pools) else 'conv'


def _drop_path_rate(block) -> float:
    dp = getattr(block, 'drop_path', None)
    return float(getattr(dp, 'drop_prob', 0.))   # timm's DropPath, or Identity where the rate is 0


def _head(model, family:str):
    "The source's pooling and classifier (torchvision's `avgpool` + flatten as timm's equal 'avg' pool)."
    if family == 'timm':
        return model.global_pool, model.fc, model.global_pool.pool_type, model.num_classes, model.drop_rate
    fc, pool = model.fc, model.avgpool
    if not (isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))):
        raise ValueError(f"`model.avgpool` is {pool!r}, not torchvision's AdaptiveAvgPool2d(1): fold_resnet keeps a "
                         f"ResNet's pooling as it is and knows only that one")
    linears = [m for m in fc.modules() if isinstance(m, nn.Linear)]
    num_classes = linears[-1].out_features if linears else 0      # an `nn.Sequential` head: its last linear layer
    return SelectAdaptivePool2d(pool_type='avg', flatten=True), fc, 'avg', num_classes, 0.


def fold_resnet(model:nn.Module, fold:int=1, start_id:int=None, end_id:int=None) -> ResNetX:
    "A ResNetX at `fold` of `model`'s own modules (a built timm or torchvision ResNet); at fold 1 it computes the same."
    family = resnet_family(model)
    stages = _blocks(model)
    num_units = tuple(len(blocks) for blocks in stages)
    plan = fold_plan(num_units, fold, start_id, end_id)   # checks fold, start_id and end_id
    blocks = [b for bs in stages for b in bs]
    # channels and reduction of every output: 0 is the stem's (a ResNet stem reduces 4 times), then one per block
    chans, reds = [blocks[0].conv1.in_channels], [4]
    for b in blocks:
        chans.append(_out_chans(b))
        reds.append(reds[-1] * b.stride)
    kind = _shortcut_kind(stages)
    units = _fold_units(model, stages, plan, chans, reds, kind)
    global_pool, fc, pool_type, num_classes, drop_rate = _head(model, family)
    unit_classes = {type(b) for b in blocks}
    # the config describes the result (its unit is the source's block class): `ResNetX(cfg)` cannot rebuild it
    cfg = ResNetXConfig(
        num_units=num_units, unit=unit_classes.pop() if len(unit_classes) == 1 else Block,
        widths=tuple(c[-1] for c in _stage_chans(chans, num_units)), strides=tuple(bs[0].stride for bs in stages),
        stem='deep' if isinstance(model.conv1, nn.Sequential) else 'resnet', stem_width=chans[0], fold=plan.fold,
        start_id=start_id, end_id=end_id, shortcut=kind, act=type(_post_act(blocks[-1])), num_classes=num_classes,
        global_pool=pool_type, drop_rate=float(drop_rate),
        drop_path_rate=max(_drop_path_rate(b) for b in blocks))
    act1 = model.act1 if family == 'timm' else model.relu
    stem = dict(conv1=model.conv1, bn1=model.bn1, act1=act1, maxpool=model.maxpool)
    folded = ResNetX.from_parts(cfg, stem, units, global_pool, fc).train(model.training)
    _set_export_cfg(folded, model, family)
    return folded


def _set_export_cfg(folded:ResNetX, model:nn.Module, family:str):
    "Give `folded` the timm cfg and arguments of the folded arch name that rebuilds it (what `save_for_hf` writes)."
    # so that `timm.create_model('local-dir:DIR', pretrained=True)` gives it back; the source's cfg where no name fits
    from .family_archs import export_name, export_args   # that module builds on this one
    own, name = getattr(model, 'pretrained_cfg', None), export_name(model, family)   # own: a timm model's (its tag's)
    if name is None:
        if own: folded.pretrained_cfg = dict(own)
        return
    folded.pretrained_cfg = dict(own or timm.models.get_pretrained_cfg(name).to_dict(), architecture=name)
    folded._model_args = export_args(folded)


def _fold_units(model:nn.Module, stages:list, plan, chans:list, reds:list, kind:str) -> list:
    "Every block as a `FoldUnit` per stage: its own layers, the skip `plan` gives it (its downsample, or a new one)."
    device_dtype, units, l = get_device_dtype(model), [], 0
    for bs in stages:
        stage_units = []
        for b in bs:
            l += 1
            src = plan.sources[l - 1]
            if (chans[src], reds[src]) == (chans[l - 1], reds[l - 1]):   # the skip has the block's input shape
                shortcut = nn.Identity() if b.downsample is None else b.downsample
            else:
                with torch.device(device_dtype['device']):
                    shortcut = new_projection(chans[src], chans[l], reds[l] // reds[src], kind, _norm_like(b.bn1))
                shortcut.to(dtype=device_dtype['dtype']).train(model.training)
            where = f'layer{len(units) + 1}.{len(stage_units)}'
            _check_consumed(b, where)
            own = nn.Identity() if b.downsample is None else b.downsample
            _check_unit(b, FoldUnit(_branch(b), own, _post_act(b)), where)
            stage_units.append(FoldUnit(_branch(b), shortcut, _post_act(b), _drop_path_rate(b)))
        units.append(stage_units)
    return units


def _stage_chans(chans, num_units):
    "The output channels of each stage's units."
    out, lo = [], 1
    for n in num_units:
        out.append(chans[lo:lo + n])
        lo += n
    return out

