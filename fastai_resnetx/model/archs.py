"The named ResNetX archs: an entry point each (`resnetx50`) for direct calls, fastai's `model_meta`, timm's registry."
import contextlib, dataclasses, inspect, os
from collections.abc import Mapping
from dataclasses import fields
from functools import partial

import torch
import torchvision
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, resolve_pretrained_cfg,
                         PretrainedCfg)
from timm.models import load_pretrained as timm_load_pretrained

from .config import RESNETX_CONFIGS, ALIASES
from .resnetx import ResNetX
from .weights import (CHECKPOINT_SUFFIXES, checkpoint_file, read_checkpoint, state_dict_of, map_state_dict,
                      resnet_counterpart)

__all__ = ['create_resnetx', 'resnetx18', 'resnetx34', 'resnetx50', 'resnetx101', 'resnetx152', 'resnetx_mbconv',
           'resnetx_fused', 'resnetx_small', 'resnetx20', 'ARCHS', 'PRETRAINED_TAGS', 'pretrained_tags',
           'torchvision_weights', 'load_pretrained']

# The pretrained sources, the one place they are written: each arch takes the weights of the ResNet with its layout,
# under timm's tag for them. tv_in1k/tv2_in1k are torchvision's IMAGENET1K_V1/V2 (torchvision's URL, read from and
# downloaded to the torch hub cache, as torchvision and fastai do); a1_in1k is timm's "ResNet strikes back" training, on
# the Hugging Face hub. The first tag is the default (torchvision's DEFAULT). Everything else (URL, hub id, input size,
# crop) is timm's own pretrained cfg of that ResNet.
PRETRAINED_TAGS = {
    'resnetx18': ('tv_in1k', 'a1_in1k'),
    'resnetx34': ('tv_in1k', 'a1_in1k'),
    'resnetx50': ('tv2_in1k', 'tv_in1k', 'a1_in1k'),
    'resnetx101': ('tv2_in1k', 'tv_in1k', 'a1_in1k'),
    'resnetx152': ('tv2_in1k', 'tv_in1k', 'a1_in1k'),
}


def _resnet_cfg(name:str, tag:str) -> dict:
    "timm's pretrained cfg of the ResNet that arch `name` has the layout of, for `tag` (torchvision's: URL only)."
    cfg = get_pretrained_cfg(f"{resnet_counterpart(RESNETX_CONFIGS[name])}.{tag}").to_dict()
    drop = ('architecture', 'tag') + (('hf_hub_id',) if tag.startswith('tv') else ())
    return {k: v for k, v in cfg.items() if k not in drop}

_NO_WEIGHTS = dict(url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                   interpolation='bilinear', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                   first_conv='conv1', classifier='fc', license='apache-2.0')

# the archs for small images are sized for 28-32 px (CIFAR's 32 here): at 224 px their feature maps would be 49x larger
_SMALL_IMAGES = {'resnetx_small': dict(input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0),
                 'resnetx20': dict(input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0)}

# timm's registry reads the pretrained cfgs of this module's entry points from here
default_cfgs = generate_default_cfgs({
    **{f'{name}.{tag}': _resnet_cfg(name, tag) for name, tags in PRETRAINED_TAGS.items() for tag in tags},
    **{name: {**_NO_WEIGHTS, **_SMALL_IMAGES.get(name, {})}
       for name in RESNETX_CONFIGS if name not in PRETRAINED_TAGS}})


def pretrained_tags(name:str) -> tuple:
    "The pretrained tags of arch `name` ('resnetx50'), the default first; () if it has none."
    return PRETRAINED_TAGS.get(name, ())


def _canonical(kwargs:dict) -> dict:
    "`kwargs` with fastai's spellings (`n_out`, `c_in`, `drop`) turned into timm's, the canonical names."
    out = {}
    for k, v in kwargs.items():
        name = ALIASES.get(k, k)
        if name in out:
            hint = " (through fastai's learners: `n_in=`)" if name == 'in_chans' else ''
            raise ValueError(f"`{k}` and `{name}` name the same setting: pass only `{name}`{hint}")
        out[name] = v
    return out


def torchvision_weights(arch:str, weights='DEFAULT'):
    "torchvision's `Weights` member for ResNet `arch` ('resnet50') from a name ('IMAGENET1K_V2', 'DEFAULT') or member."
    enum = torchvision.models.get_model_weights(arch)
    if isinstance(weights, enum): return weights
    if isinstance(weights, str):
        name = weights[len(enum.__name__) + 1:] if weights.startswith(enum.__name__ + '.') else weights
        if name in enum.__members__: return enum[name]
    hint = ' (those are for another model)' if isinstance(weights, torchvision.models.WeightsEnum) else ''
    raise ValueError(f"`weights`={weights!r}{hint} is not torchvision weights of {arch}; allowed: "
                     f"{list(enum.__members__)} or a {enum.__name__} member")


def _is_file(weights) -> bool:
    if isinstance(weights, os.PathLike): return True
    return isinstance(weights, str) and (weights.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in weights
                                         or '/' in weights)


def _weights_cfg(name:str, weights) -> tuple:
    "Our `weights=` as timm's (`pretrained_cfg` tag, `_overlay`): a tag, a torchvision name, a file, a state dict."
    tags = pretrained_tags(name)
    if isinstance(weights, Mapping): return None, dict(state_dict=weights)
    if _is_file(weights): return None, dict(file=str(weights))
    if not tags:
        raise ValueError(f"{name or 'this ResNetX'} has no pretrained weights (no ResNet has its layout), so `weights`="
                         f"{weights!r} cannot fill it: pass a file saved from this very architecture, or a state dict")
    if weights is True or weights == 'DEFAULT': return None, {}
    resnet = resnet_counterpart(RESNETX_CONFIGS[name])
    if isinstance(weights, str):
        tag = weights.removeprefix(f'{name}.').removeprefix(f'timm:{resnet}.')
        if tag in tags: return tag, {}
        if weights.startswith('timm:'):
            raise ValueError(f"`weights`={weights!r}: {name} takes the timm weights "
                             f"{[f'timm:{resnet}.{t}' for t in tags]}")
    if not isinstance(weights, (str, torchvision.models.WeightsEnum)):
        raise ValueError(f"`weights` must be True, one of the tags {list(tags)}, a torchvision weights name or member, "
                         f"'timm:<name>', a {'/'.join(CHECKPOINT_SUFFIXES)} file or a state dict; got {weights!r}")
    url = torchvision_weights(resnet, weights).url
    return next(t for t in tags if default_cfgs[name].cfgs[t].url == url), {}


def _checkpoint_cfg(state_dict:dict, cfg) -> dict:
    "What a state dict was trained for (classes, input channels) as pretrained cfg fields, for timm to adapt the model."
    fc, conv = state_dict.get('fc.weight'), state_dict.get('conv1.weight')
    in_chans = cfg.input_size[0] if conv is None else conv.shape[1]
    return dict(num_classes=0 if fc is None else fc.shape[0], input_size=(in_chans, *cfg.input_size[1:]))


def _resolve(name, tag=None, overlay=None):
    "timm's resolved pretrained cfg of `name` and `tag` with `overlay`; for an unnamed ResNetX, a cfg with no weights."
    if name: return resolve_pretrained_cfg(name, tag, overlay)
    return dataclasses.replace(PretrainedCfg(**_NO_WEIGHTS, architecture='ResNetX'), **(overlay or {}))


def _source(cfg, cache_dir=None) -> tuple:
    "The state dict a resolved pretrained cfg names, where it came from (words), and its file (None for a state dict)."
    if cfg.state_dict is not None: return state_dict_of(cfg.state_dict, '`weights`'), 'the given state dict', None
    path = checkpoint_file(cfg, cache_dir)
    what = 'checkpoint file' if cfg.file else f"{cfg.architecture}.{cfg.tag} weights"
    return read_checkpoint(path), f"{what} ({path!r})", path


def _build(name:str, device=None, dtype=None, **kwargs) -> ResNetX:
    with torch.device(device) if device is not None else contextlib.nullcontext():   # timm's factory arguments
        model = ResNetX(RESNETX_CONFIGS[name], **kwargs)
    if dtype is not None: model.to(dtype=dtype)
    return model


def create_resnetx(name:str, pretrained:bool=False, weights=None, **kwargs) -> ResNetX:
    "Build the named ResNetX through timm's builder; `kwargs` are config fields and timm's (`features_only`, ...)."
    if name not in RESNETX_CONFIGS: raise ValueError(f"`name` must be one of {sorted(RESNETX_CONFIGS)}, got {name!r}")
    if not isinstance(pretrained, bool):
        raise ValueError(f"`pretrained` must be True or False, got {pretrained!r}; choose the weights with `weights=`")
    kwargs = _canonical(kwargs)
    if weights is not None and weights is not False:
        if kwargs.get('pretrained_cfg') or kwargs.get('pretrained_cfg_overlay'):
            raise ValueError("pass `weights` or timm's `pretrained_cfg`/`pretrained_cfg_overlay`, not both")
        pretrained, (kwargs['pretrained_cfg'], kwargs['pretrained_cfg_overlay']) = True, _weights_cfg(name, weights)
    source, path = None, None
    if pretrained: source, path = _read_weights(name, kwargs)
    # features_only wraps the model in timm's FeatureGetterNet, which calls `forward_intermediates`
    model = build_model_with_cfg(_build, name, pretrained=pretrained,
                                 pretrained_filter_fn=partial(map_state_dict, source=source),
                                 feature_cfg=dict(feature_cls='getter', out_indices=_feature_indices(name, kwargs)),
                                 name=name, **kwargs)
    for m in (model, getattr(model, 'model', None)):   # the cfg keeps the file the weights came from, not the tensors
        if pretrained and isinstance(getattr(m, 'pretrained_cfg', None), dict):
            m.pretrained_cfg.pop('state_dict', None)
            if path: m.pretrained_cfg['file'] = path
    if isinstance(model, ResNetX): model._model_args = _model_args(name, model.cfg)
    return model


def _feature_indices(name:str, kwargs:dict) -> tuple:
    "timm's default feature taps (`features_only`): the stem's and every stage's (timm's default 0-4 is 4 stages')."
    stages = len(kwargs.get('num_units') or kwargs.get('num_nodes') or RESNETX_CONFIGS[name].num_units)
    return tuple(range(stages + 1))


# timm's `get_model_args` takes these from the model itself, and leaves drop rates out of a saved config
_RUNTIME_ARGS = ('num_classes', 'in_chans', 'global_pool', 'drop_rate', 'drop_path_rate')


def _model_args(name:str, cfg) -> dict:
    "Config fields that differ from arch `name`'s, JSON-ready: what timm's `save_for_hf` writes to rebuild the model."
    default = RESNETX_CONFIGS[name].to_dict()
    return {k: v for k, v in cfg.to_dict().items() if k not in _RUNTIME_ARGS and v != default[k]}


def _read_weights(name:str, kwargs:dict) -> tuple:
    "Read the weights timm's `pretrained_cfg`/`_overlay` in `kwargs` name into the overlay: safely, offline if cached."
    # timm's loader then maps (our filter), adapts the first conv and classifier, and loads them
    cfg = resolve_pretrained_cfg(name, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    state_dict, source, path = _source(cfg, kwargs.get('cache_dir'))
    kwargs['pretrained_cfg_overlay'] = {**(kwargs.get('pretrained_cfg_overlay') or {}),
                                        **_checkpoint_cfg(state_dict, cfg), 'state_dict': state_dict}
    return source, path


def load_pretrained(model:ResNetX, weights=True) -> ResNetX:
    "Load `weights` (as an entry point's `weights=`) into a built ResNetX, through timm's loader and the same mapping."
    if weights is None or weights is False: return model
    name = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or \
        (resnet_counterpart(model.cfg) or '').replace('resnet', 'resnetx') or None   # None: no arch of this layout
    tag, overlay = _weights_cfg(name, weights)
    state_dict, source, _ = _source(_resolve(name, tag, overlay))
    cfg = _resolve(name, tag)
    cfg = {**cfg.to_dict(), **_checkpoint_cfg(state_dict, cfg), 'state_dict': state_dict}
    timm_load_pretrained(model, cfg, num_classes=model.num_classes, in_chans=model.in_chans,
                         filter_fn=partial(map_state_dict, source=source))
    return model


def _signed(fn):
    "Give entry point `fn` a readable signature: each config field a keyword, with this arch's value as its default."
    cfg, P = RESNETX_CONFIGS[fn.__name__], inspect.Parameter
    params = [P('pretrained', P.POSITIONAL_OR_KEYWORD, default=False), P('weights', P.KEYWORD_ONLY, default=None),
              *[P(f.name, P.KEYWORD_ONLY, default=getattr(cfg, f.name)) for f in fields(cfg)],
              P('kwargs', P.VAR_KEYWORD)]
    fn.__signature__ = inspect.Signature(params, return_annotation=ResNetX)
    return fn

@_signed
def resnetx18(pretrained=False, **kwargs):
    "ResNetX with resnet18's layout (2,2,2,2) of basic blocks."
    return create_resnetx('resnetx18', pretrained, **kwargs)

@_signed
def resnetx34(pretrained=False, **kwargs):
    "ResNetX with resnet34's layout (3,4,6,3) of basic blocks."
    return create_resnetx('resnetx34', pretrained, **kwargs)

@_signed
def resnetx50(pretrained=False, **kwargs):
    "ResNetX with resnet50's layout (3,4,6,3) of bottlenecks."
    return create_resnetx('resnetx50', pretrained, **kwargs)

@_signed
def resnetx101(pretrained=False, **kwargs):
    "ResNetX with resnet101's layout (3,4,23,3) of bottlenecks."
    return create_resnetx('resnetx101', pretrained, **kwargs)

@_signed
def resnetx152(pretrained=False, **kwargs):
    "ResNetX with resnet152's layout (3,8,36,3) of bottlenecks."
    return create_resnetx('resnetx152', pretrained, **kwargs)

@_signed
def resnetx_mbconv(pretrained=False, **kwargs):
    "ResNetX of MBConv units (depthwise conv, squeeze-excitation, SiLU), layout (2,3,4,2)."
    return create_resnetx('resnetx_mbconv', pretrained, **kwargs)

@_signed
def resnetx_fused(pretrained=False, **kwargs):
    "ResNetX of fused-MBConv units (EfficientNetV2), layout (2,3,4,2)."
    return create_resnetx('resnetx_fused', pretrained, **kwargs)

@_signed
def resnetx_small(pretrained=False, **kwargs):
    "ResNetX for 28-32 px images: a 3x3 stride-1 stem, no max-pool, one basic unit per stage, widths 16 to 128."
    return create_resnetx('resnetx_small', pretrained, **kwargs)

@_signed
def resnetx20(pretrained=False, **kwargs):
    "ResNetX with CIFAR ResNet-20's layout: a 3x3 stride-1 stem, three stages of three basic units, widths 16-32-64."
    return create_resnetx('resnetx20', pretrained, **kwargs)


ARCHS = [resnetx18, resnetx34, resnetx50, resnetx101, resnetx152, resnetx_mbconv, resnetx_fused, resnetx_small,
         resnetx20]
