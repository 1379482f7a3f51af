"""fastai integration data: `model_meta` entries (cut, split, stats, weights) per ResNetX arch, by function and name.

fastai looks up `model_meta.get(arch)` with whatever `arch` it was given: the entry point (`resnetx50`), its timm name
(`'resnetx50'`, which `vision_learner` builds through timm), or an arch from `resnetx_arch('resnetx50', fold=3)`.
All three get the same entry, so the same derived layer groups and normalization stats."""
from dataclasses import fields
from functools import partial

import timm, torch

from fastai.vision.learner import model_meta
from fastai.vision.core import imagenet_stats

from ..inspection.splitter import arch_splitter
from ..model.archs import ARCHS, pretrained_tags
from ..model.config import RESNETX_CONFIGS, ALIASES
from ..model.family_archs import FOLDED_ARCHS, default_cfgs as _folded_cfgs

__all__ = ['RESNETX_ARCHS', 'resnetx_arch', 'folded_arch']

RESNETX_ARCHS = ARCHS
_BY_NAME = {arch.__name__: arch for arch in ARCHS}


def _meta(arch) -> dict:
    # cut=-2: the body is every child before `global_pool` and `fc` (stem layers and stages), as for torchvision's
    # ResNet, so fastai's `create_body` and `DynamicUnet` see (and hook) each stem layer and stage
    meta = {'cut': -2, 'split': arch_splitter, 'stats': imagenet_stats}   # groups derived from the structure
    if pretrained_tags(arch.__name__): meta['weights'] = 'DEFAULT'   # fastai then calls arch(weights=...)
    return meta

for _arch in ARCHS: model_meta[_arch] = model_meta[_arch.__name__] = _meta(_arch)


_registered = {}   # arch name -> [(config, arch)]: each distinct configuration gets one arch and one `model_meta` entry

def _input_channels_error(key):
    return ValueError(f"resnetx_arch: `{key}` is not a config to fix in the arch: pass fastai's `n_in=` to "
                      f"`vision_learner`/`unet_learner`/`create_body`, which adapts the first conv (and its pretrained "
                      f"weights) and normalizes the input only when it has 3 channels")

def resnetx_arch(name, **overrides):
    "A ResNetX arch with config overrides (e.g. `fold=3`) for fastai's learners; one `model_meta` entry per config."
    base = _BY_NAME.get(getattr(name, '__name__', name))
    if base is None or (callable(name) and name is not base):
        raise ValueError(f"`name` must be one of {sorted(_BY_NAME)} (or its entry point), got {name!r}")
    for key in overrides:
        if ALIASES.get(key, key) == 'in_chans': raise _input_channels_error(key)
        if key in ('pretrained', 'weights'):
            raise ValueError(f"resnetx_arch: `{key}` is chosen by fastai's learner (`pretrained=`, `weights=`), "
                             "not the arch")
    base_cfg = RESNETX_CONFIGS[base.__name__]
    cfg = base_cfg.replace(**overrides)   # checks every key and value now, not when fastai builds the model
    if cfg == base_cfg: return base
    known = _registered.setdefault(base.__name__, [])
    for c, arch in known:
        if c == cfg: return arch
    changed = {f.name: getattr(cfg, f.name) for f in fields(cfg) if getattr(cfg, f.name) != getattr(base_cfg, f.name)}
    arch = partial(base, **changed)
    model_meta[arch] = model_meta[base]
    known.append((cfg, arch))
    return arch


# ---- folded timm/torchvision ResNets (`folded_resnet50d`, `folded_tv_resnet50`): the same cut and derived groups; the
# normalisation stats of the source's default weights (fastai reads them for a function arch; timm's cfg for a name)
_FOLDED = {arch.__name__: arch for arch in FOLDED_ARCHS}

def _folded_meta(name) -> dict:
    cfg = _folded_cfgs[name].default
    return {'cut': -2, 'split': arch_splitter, 'stats': (list(cfg.mean), list(cfg.std))}

for _arch in FOLDED_ARCHS: model_meta[_arch] = model_meta[_arch.__name__] = _folded_meta(_arch.__name__)

_folded_registered = {}

def folded_arch(name, fold:int=1, start_id:int=None, end_id:int=None):
    "A folded ResNet arch (`'folded_resnet50d'` or its entry point) at `fold` for fastai's learners, in `model_meta`."
    base = _FOLDED.get(getattr(name, '__name__', name))
    if base is None or (callable(name) and name is not base):
        raise ValueError(f"`name` must be a folded arch name (e.g. 'folded_resnet50d', 'folded_tv_resnet50'; "
                         f"timm.list_models('folded_*')) or its entry point, got {name!r}")
    key = (base.__name__, fold, start_id, end_id)
    if key not in _folded_registered:
        with torch.device('meta'):   # the fold window is checked now, not when fastai builds the model
            timm.create_model(base.__name__, fold=fold, start_id=start_id, end_id=end_id)
        arch = partial(base, fold=fold, start_id=start_id, end_id=end_id)
        model_meta[arch] = model_meta[base]
        _folded_registered[key] = arch
    return _folded_registered[key]
