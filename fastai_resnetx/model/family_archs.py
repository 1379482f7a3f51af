"""Folded ResNets by name: `folded_<name>` for every ResNet of timm's resnet.py, `folded_tv_<name>` for torchvision's.

Each is a timm entry point (`timm.create_model('folded_seresnext50_32x4d.gluon_in1k', pretrained=True, fold=2)`), a
fastai arch (`vision_learner(dls, 'folded_resnet50d')`) and a plain function. It builds the source with its own
library (timm's pretrained tags and loader; torchvision's weights enum and loader), the weights read from the local
cache when present (no network), and folds it with `fold_resnet`: one construction path (`ResNetX.from_parts`)."""
import re, sys
from contextlib import nullcontext
from functools import lru_cache, partial

import timm, torch, torchvision
from timm.models import build_model_with_cfg, generate_default_cfgs, get_arch_pretrained_cfgs, resolve_pretrained_cfg
from timm.models import adapt_input_conv
from timm.layers import DropPath

from .family import fold_resnet
from ..checks import check_choice
from .resnetx import ResNetX
from .weights import checkpoint_file, read_checkpoint

__all__ = ['folded', 'FOLDED_ARCHS', 'TIMM_SOURCES', 'TV_SOURCES', 'folded_source']   # and export_name, export_args

PREFIX, TV_PREFIX = 'folded_', 'folded_tv_'
TIMM_SOURCES = tuple(timm.list_models(module='resnet'))   # every ResNet of timm's resnet.py
TV_SOURCES = tuple(n for n in torchvision.models.list_models(module=torchvision.models)
                   if re.match(r'(resnet|resnext|wide_resnet)\d', n))


def _tv_cfg(weights) -> dict:
    "timm's pretrained cfg fields for torchvision `weights` (its URL, and the crop its transforms use)."
    t = weights.transforms()
    return dict(url=weights.url, num_classes=len(weights.meta['categories']), input_size=(3, *t.crop_size * 2)[:3],
                pool_size=(7, 7), crop_pct=t.crop_size[0] / t.resize_size[0], interpolation='bilinear',
                mean=tuple(t.mean), std=tuple(t.std), first_conv='conv1', classifier='fc', license='bsd-3-clause')


def _tv_tag(member_name:str) -> str: return member_name.lower()   # IMAGENET1K_V2 -> imagenet1k_v2, timm's tag style


def _default_cfgs() -> dict:
    "The pretrained cfgs of every folded name: the source's, under the source's tags (torchvision's: its weights)."
    cfgs = {}
    for n in TIMM_SOURCES:
        for name_tag, cfg in get_arch_pretrained_cfgs(n).items():
            tag = name_tag.partition('.')[2]
            d = {k: v for k, v in cfg.to_dict().items() if k not in ('architecture', 'tag')}
            cfgs[f'{PREFIX}{n}.{tag}' if tag else f'{PREFIX}{n}'] = d
    for n in TV_SOURCES:
        enum = torchvision.models.get_model_weights(n)
        default = enum.DEFAULT.name   # the default tag first: timm's rule for which tag `pretrained=True` means
        for member in sorted(enum, key=lambda w: w.name != default):
            cfgs[f'{TV_PREFIX}{n}.{_tv_tag(member.name)}'] = _tv_cfg(member)
    return cfgs

# timm's registry reads the pretrained cfgs of this module's entry points from here
default_cfgs = generate_default_cfgs(_default_cfgs())


def folded_source(name:str) -> tuple:
    "('timm' or 'torchvision', source name) of a folded arch name ('folded_resnet50d' -> ('timm', 'resnet50d'))."
    base = name.partition('.')[0]
    if base.startswith(TV_PREFIX) and base[len(TV_PREFIX):] in TV_SOURCES: return 'torchvision', base[len(TV_PREFIX):]
    if base.startswith(PREFIX) and base[len(PREFIX):] in TIMM_SOURCES: return 'timm', base[len(PREFIX):]
    raise ValueError(f"`name` must be 'folded_' + one of timm's resnet.py archs ({len(TIMM_SOURCES)}: timm.list_models("
                     f"module='resnet')) or 'folded_tv_' + one of torchvision's {list(TV_SOURCES)}, got {name!r}")


def _tag_of(pretrained_cfg) -> str:
    "The tag a `pretrained_cfg` argument names (a tag string, a cfg or a dict), or None."
    if pretrained_cfg is None or isinstance(pretrained_cfg, str): return pretrained_cfg
    if isinstance(pretrained_cfg, dict): return pretrained_cfg.get('tag')
    return getattr(pretrained_cfg, 'tag', None)


def _timm_source(src:str, pretrained:bool, pretrained_cfg, overlay, **kwargs):
    "timm's model `src`, the weights of the tag/overlay read by timm's loader from a local file (the cache first)."
    if pretrained:   # the file itself: the cached copy without asking the hub, else one download (timm's sources)
        tag, overlay = _tag_of(pretrained_cfg), dict(overlay or {})
        overlay['file'] = checkpoint_file(resolve_pretrained_cfg(src, tag, overlay))
        pretrained_cfg = tag
    return timm.create_model(src, pretrained=pretrained, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
                             **kwargs)


def _tv_source(src:str, pretrained:bool, pretrained_cfg, overlay, num_classes:int=1000, in_chans:int=3,
               drop_rate:float=0., drop_path_rate:float=0., global_pool:str=None, output_stride:int=32, **kwargs):
    "torchvision's model `src`, its weights through torchvision's loader (the torch hub cache first); timm's arguments."
    check_choice('output_stride', output_stride, (8, 16, 32))
    if output_stride < 32:   # timm's dilation, as torchvision says it (the last stage; the last two at 8)
        if 'replace_stride_with_dilation' in kwargs:
            raise ValueError("give `output_stride` or `replace_stride_with_dilation`, not both")
        kwargs['replace_stride_with_dilation'] = [False, output_stride == 8, True]
        if src in ('resnet18', 'resnet34'):
            raise ValueError(f"`output_stride` {output_stride}: torchvision's {src} (BasicBlock) cannot dilate; its "
                             f"Bottleneck ResNets can (folded_tv_resnet50, ...), and timm's folded_{src} can")
    weights = None
    if pretrained:
        tag, file = _tag_of(pretrained_cfg), (overlay or {}).get('file')
        enum = torchvision.models.get_model_weights(src)
        weights = enum.DEFAULT if tag is None else next((w for w in enum if _tv_tag(w.name) == tag), None)
        if weights is None: raise ValueError(f"`pretrained_cfg`={tag!r}: torchvision's {src} has the tags "
                                             f"{[_tv_tag(w.name) for w in enum]}")
    model = torchvision.models.get_model(src, weights=None if pretrained and file else weights, **kwargs)
    if pretrained and file: model.load_state_dict(read_checkpoint(file))   # safely, NaN refused, safetensors too
    return model, dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                       global_pool=global_pool)


def _adapt_tv(m:ResNetX, num_classes:int, in_chans:int, drop_rate:float, drop_path_rate:float, global_pool) -> ResNetX:
    "timm's model arguments on a folded torchvision model: classifier, input channels (timm's rule), dropouts."
    if num_classes != m.num_classes or global_pool is not None: m.reset_classifier(num_classes, global_pool)
    if in_chans != 3:
        w = m.conv1.weight
        m.conv1.weight = torch.nn.Parameter(adapt_input_conv(in_chans, w.detach()), requires_grad=w.requires_grad)
        m.conv1.in_channels = in_chans
    m.drop_rate = drop_rate
    if drop_path_rate:   # timm's rule: linear in depth from 0 at the first unit
        units = m.units
        for l, u in enumerate(units): u.drop_path = DropPath(drop_path_rate * l / max(len(units) - 1, 1))
        m._cfg = m._cfg.replace(drop_path_rate=drop_path_rate)
    m._cfg = m._cfg.replace(drop_rate=drop_rate)
    return m


def _build(name:str, pretrained:bool, fold:int, start_id, end_id, pretrained_cfg, overlay, **kwargs) -> ResNetX:
    family, src = folded_source(name)
    if family == 'timm':
        return fold_resnet(_timm_source(src, pretrained, pretrained_cfg, overlay, **kwargs), fold, start_id, end_id)
    # timm's factory arguments that torchvision's builders lack: where and in which dtype the model is made
    device, dtype = kwargs.pop('device', None), kwargs.pop('dtype', None)
    with torch.device(device) if device is not None else nullcontext():
        model, timm_args = _tv_source(src, pretrained, pretrained_cfg, overlay, **kwargs)
        model = _adapt_tv(fold_resnet(model, fold, start_id, end_id), **timm_args)
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


def _is_saved_export(pretrained_cfg) -> bool:
    "Whether `pretrained_cfg` is what timm read from a saved model's config.json (`local-dir:`, `hf-hub:`)."
    cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else getattr(pretrained_cfg, '__dict__', {})
    return cfg.get('source') in ('local-dir', 'hf-hub')


def create_folded(name:str, pretrained:bool=False, fold:int=1, start_id:int=None, end_id:int=None, **kwargs) -> ResNetX:
    "The folded arch `name` through timm's builder (pretrained cfg, `features_only`); `kwargs` go to the source's."
    folded_source(name)
    if not isinstance(pretrained, bool): raise ValueError(f"`pretrained` must be True or False, got {pretrained!r}")
    cfg, overlay = kwargs.pop('pretrained_cfg', None), kwargs.pop('pretrained_cfg_overlay', None)
    # a saved folded model (save_for_hf, then 'local-dir:' or 'hf-hub:') holds its own tensors: timm's loader reads
    # them into the folded model; the source's checkpoint is for `pretrained` by the source's tags only
    saved = pretrained and _is_saved_export(cfg)
    build = partial(_build, name, pretrained and not saved, fold, start_id, end_id, cfg, overlay)
    model = build_model_with_cfg(build, name, pretrained=saved, pretrained_cfg=cfg, pretrained_cfg_overlay=overlay,
                                 feature_cfg=dict(feature_cls='getter'), **kwargs)
    if isinstance(model, ResNetX): model._model_args = dict(getattr(model, '_model_args', {}), **export_args(model))
    return model


def export_args(model:ResNetX) -> dict:
    "The arguments that rebuild a folded model from its name (what timm's `save_for_hf` writes to config.json)."
    cfg = model.cfg
    return dict(fold=cfg.fold, start_id=cfg.start_id, end_id=cfg.end_id)


def _layout(m:torch.nn.Module) -> dict:
    "A ResNet's tensor names and shapes but for the classifier, the first conv's without its input channels."
    return {k: v.shape[:1] + v.shape[2:] if k in ('conv1.weight', 'conv1.0.weight') else v.shape
            for k, v in m.state_dict().items() if not k.startswith('fc.')}


@lru_cache(maxsize=None)
def _source_layout(family:str, src:str) -> dict:
    "The layout of source arch `src` as its library builds it (on the meta device: no memory, no init)."
    with torch.device('meta'):
        return _layout(timm.create_model(src) if family == 'timm' else torchvision.models.get_model(src))


def export_name(model:torch.nn.Module, family:str):
    "The folded arch name that rebuilds source `model` (a timm or torchvision ResNet), or None if none does."
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    candidates = TV_SOURCES if family != 'timm' else [arch] if arch in TIMM_SOURCES else []
    layout = _layout(model)
    for src in candidates:
        if _source_layout(family, src) == layout: return (PREFIX if family == 'timm' else TV_PREFIX) + src
    return None


def _entry(name:str):
    "The entry point of folded arch `name`, named so for timm's registry and fastai's `model_meta`."
    def fn(pretrained:bool=False, fold:int=1, start_id:int=None, end_id:int=None, **kwargs) -> ResNetX:
        return create_folded(name, pretrained, fold, start_id, end_id, **kwargs)
    family, src = folded_source(name)
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"{family}'s {src} as a ResNetX at `fold` (its blocks, its weights with `pretrained`)."
    return fn

FOLDED_ARCHS = [_entry(PREFIX + n) for n in TIMM_SOURCES] + [_entry(TV_PREFIX + n) for n in TV_SOURCES]
for _fn in FOLDED_ARCHS: setattr(sys.modules[__name__], _fn.__name__, _fn)   # importable by name from this module


def folded(name:str, fold:int=1, start_id:int=None, end_id:int=None, pretrained:bool=False, **kwargs) -> ResNetX:
    "A folded ResNet by its source's name and timm tag ('seresnext50_32x4d.gluon_in1k'; torchvision's: 'tv:resnet50')."
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a model name such as 'resnet50d.ra2_in1k', got {name!r}")
    full = TV_PREFIX + name[3:] if name.startswith('tv:') else PREFIX + name
    return timm.create_model(full, pretrained=pretrained, fold=fold, start_id=start_id, end_id=end_id, **kwargs)
