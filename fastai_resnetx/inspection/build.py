"One naming rule and one way to build an arch with random weights, never downloading: what every inspection tool uses."
import inspect, re

from contextlib import ExitStack

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ['WEIGHTS_OFF', 'TimmName', 'weights_off_kwargs', 'random_init_kwargs', 'arch_from_name', 'build_by_name',
           'build_arch', 'build_on_meta']

# Every weights-like builder argument and the value that means "no weights": torchvision's `weights`/`weights_backbone`,
# fastai's and timm's `pretrained`, torchvision's legacy `pretrained_backbone`.
WEIGHTS_OFF = {'weights': None, 'weights_backbone': None, 'pretrained': False, 'pretrained_backbone': False}
# Other argument names that ask for weights (`backbone_weights`, `pretrained_head`, ...); timm's `pretrained_cfg*` and
# `pretrained_strict` configure a load, they don't ask for one.
_WEIGHTS_LIKE = re.compile(r'(?:\w+_)?(weights|pretrained)(?:_\w+)?')
_NOT_WEIGHTS = re.compile(r'pretrained_(cfg|strict)\w*')


def weights_off_kwargs(arch) -> dict:
    "Keyword arguments that turn off each weights-like argument of `arch` (`weights=None`, `pretrained=False`, ...)."
    try: ps = inspect.signature(arch).parameters
    except (TypeError, ValueError): return {}
    kwargs = {}
    for name, p in ps.items():
        m = _WEIGHTS_LIKE.fullmatch(name)
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or m is None or _NOT_WEIGHTS.fullmatch(name): continue
        kwargs[name] = WEIGHTS_OFF.get(name, None if m.group(1) == 'weights' else False)
    return kwargs


def random_init_kwargs(arch, lenient:bool=False) -> dict:
    "`weights_off_kwargs(arch)`; if `lenient`, `pretrained=False` when the signature can't tell (unreadable, **kwargs)."
    kwargs = weights_off_kwargs(arch)
    if not lenient or kwargs: return kwargs
    try: ps = inspect.signature(arch).parameters
    except (TypeError, ValueError): return dict(pretrained=False)
    return dict(pretrained=False) if any(p.kind is p.VAR_KEYWORD for p in ps.values()) else {}


def _resnetx_archs() -> dict:
    "Our arch names and their entry points"
    from ..model.archs import ARCHS
    return {arch.__name__: arch for arch in ARCHS}


class TimmName(str):
    "A model name that means timm's model: fastai passes a string arch to timm, and `arch_from_name` keeps it timm's."


def arch_from_name(name:str, argname:str='arch'):
    "The arch `name` means: ours for ResNetX names, torchvision's for its names, else timm's (also for `timm/NAME`)."
    # Returns our entry point or torchvision's builder (functions), or a `TimmName` (a string, as fastai takes timm's).
    import timm, torchvision
    if not isinstance(name, str): raise TypeError(f'{argname}={name!r} is a {type(name).__name__}, not a model name')
    if isinstance(name, TimmName): return name
    if name.startswith('timm/'):
        if timm.is_model(name[5:]): return TimmName(name[5:])
        raise ValueError(f'{argname}={name!r} is not known: timm has no model {name[5:]!r}; see timm.list_models()')
    ours = _resnetx_archs()
    if name in ours: return ours[name]
    if name in torchvision.models.list_models(): return torchvision.models.get_model_builder(name)
    if timm.is_model(name): return TimmName(name)
    raise ValueError(f'{argname}={name!r} is not known: allowed are our model names ({", ".join(sorted(ours))}), '
                     'torchvision\'s (torchvision.models.list_models()) and timm\'s (timm.list_models(); `timm/NAME` '
                     'for timm\'s where torchvision has the same name)')


def _builder(arch):
    "A function that builds `arch` (a name, or a model function) with random weights: never downloads"
    if isinstance(arch, str): arch = arch_from_name(arch)
    if isinstance(arch, str):
        import timm
        return lambda **kwargs: timm.create_model(arch, pretrained=False, **kwargs)
    if not callable(arch): raise TypeError(f'arch={arch!r} is neither a function that builds a model nor a model name')
    off = weights_off_kwargs(arch)
    return lambda **kwargs: arch(**{**off, **kwargs})


def _checked(model, arch):
    if not isinstance(model, nn.Module):
        raise TypeError(f'arch={getattr(arch, "__name__", arch)!r} returned a {type(model).__name__}, not an nn.Module')
    return model


class _InitOnMeta(TorchFunctionMode):
    "In-place value changes of `meta` tensors (init's `normal_`, `zero_`, ...) return at once: there are no values"
    # Their meta kernels are Python decompositions: an efficientnet_b7 or densenet201 builds on meta in half the time.
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _VALUE_ONLY and isinstance(args[0], torch.Tensor) and args[0].device.type == 'meta': return args[0]
        return func(*args, **(kwargs or {}))

_VALUE_ONLY = {getattr(torch.Tensor, name) for name in ('normal_', 'uniform_', 'zero_', 'fill_', 'copy_', 'mul_',
               'add_', 'sub_', 'div_', 'clamp_', 'erfinv_', 'exp_', 'log_', 'sqrt_', 'bernoulli_', 'random_',
               'exponential_', 'fill_diagonal_')}


def _building(*contexts):
    "A build's contexts: the same random weights every time, the user's random state untouched, init skipped on meta"
    # the same weights make a data-dependent count (detection heads) the same on every call
    stack = ExitStack()
    for c in (torch.random.fork_rng(devices=[]), *contexts, _InitOnMeta()): stack.enter_context(c)
    torch.manual_seed(0)
    return stack


def build_arch(arch, device=None, **kwargs) -> nn.Module:
    "Build `arch` (a model function or name, see `arch_from_name`) on `device` with random weights, never downloading."
    build = _builder(arch)
    with _building(torch.device(device or 'cpu')): return _checked(build(**kwargs), arch)


def build_by_name(name:str, device=None, argname:str='arch', **kwargs) -> nn.Module:
    "Build the model a name means (see `arch_from_name`) with random weights."
    arch_from_name(name, argname)  # the error names `argname`
    return build_arch(name, device, **kwargs)


def build_on_meta(arch, **kwargs) -> nn.Module:
    "Build `arch` without allocating its weights: on `meta`, else parameters on `meta` only, else on CPU."
    build = _builder(arch)
    # Some builders compute sizes with torch ops and read them back (RegNet's `BlockParams` calls `.tolist()`), which
    # a `meta` default device cannot do: accelerate's `init_empty_weights` puts only the parameters on `meta`.
    from accelerate import init_empty_weights
    attempts = [lambda: torch.device('meta'), lambda: init_empty_weights(include_buffers=False),
                lambda: torch.device('cpu')]
    for i, context in enumerate(attempts):
        try:
            with _building(context()): return _checked(build(**kwargs), arch)
        except Exception:
            if i == len(attempts) - 1: raise
