"Build an arch (a model function, or a timm or torchvision name) with random weights: never downloads."
import inspect

import torch
from torch import nn

__all__ = ['random_init_kwargs', 'build_by_name', 'build_arch']


def random_init_kwargs(arch, lenient:bool=False) -> dict:
    "Keyword arguments that build `arch` with random weights: `weights=None` (torchvision) and/or `pretrained=False`."
    # `lenient`: also pass pretrained=False when the signature cannot tell (unreadable, or only **kwargs)
    try: ps = inspect.signature(arch).parameters
    except (TypeError, ValueError): return dict(pretrained=False) if lenient else {}
    kwargs = {'weights': None} if 'weights' in ps else {}
    if 'pretrained' in ps or (lenient and not kwargs and any(p.kind is p.VAR_KEYWORD for p in ps.values())):
        kwargs['pretrained'] = False
    return kwargs


def build_by_name(name:str, device=None, argname:str='arch', **kwargs) -> nn.Module:
    "Build a model by timm name, else by torchvision name, with random weights."
    import timm, torchvision
    with torch.device(device or 'cpu'):
        if timm.is_model(name): return timm.create_model(name, pretrained=False, **kwargs)
        if name in torchvision.models.list_models(): return torchvision.models.get_model(name, weights=None, **kwargs)
    raise ValueError(f'{argname}={name!r} is not a model name timm knows, nor a torchvision one; see timm.list_models() '
                     'and torchvision.models.list_models(), or pass the model function or a model')


def build_arch(arch, device=None, **kwargs) -> nn.Module:
    "Build the model of `arch` (a model function or a timm/torchvision name) with random weights, never downloading"
    if isinstance(arch, str): return build_by_name(arch, device, **kwargs)
    if not callable(arch): raise TypeError(f'arch={arch!r} is neither a function that builds a model nor a model name')
    kwargs = {**random_init_kwargs(arch), **kwargs}
    with torch.device(device or 'cpu'): model = arch(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f'arch={getattr(arch, "__name__", arch)!r} returned a {type(model).__name__}, not an nn.Module')
    return model
