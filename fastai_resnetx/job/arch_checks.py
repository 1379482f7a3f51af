"Checks of an arch that run before any work: is it an image classifier's backbone, and can it take the input size."
import copy, inspect

import torch
from torch import nn

from .data import available_memory

__all__ = ['check_arch', 'check_input_size', 'not_an_image_model', 'check_pretrained']


def not_an_image_model(model:nn.Module):
    "Why `model` cannot be an image classifier (one batch of images in), or None if nothing says so."
    try: params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError): params = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p.name for p in params if p.kind in positional and p.default is p.empty]
    if len(required) > 1:
        return f"its forward takes {len(required)} inputs ({', '.join(required)}), not one image batch"
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    if isinstance(conv, nn.Conv3d): return "its first convolution is 3-D (Conv3d): it takes video clips, not images"
    if isinstance(conv, nn.Conv1d): return "its first convolution is 1-D (Conv1d): it takes sequences, not images"
    return None


def check_arch(arch, name:str, size:int):
    "Refuse, in one line before any work, an `arch` fastai cannot make an image classifier of, or that `size` breaks."
    from ..inspection.build import build_on_meta
    try: model = build_on_meta(arch)
    except Exception: return                       # the real build gives its own message
    reason = not_an_image_model(model)
    if reason: raise ValueError(f"`arch` {name!r} is not an image classification backbone: {reason}")
    body = None if isinstance(arch, str) else _fastai_body(model, arch, name)   # timm's: timm's own features
    check_input_size(model, size, name)
    if body is None: return
    try:
        with torch.no_grad(): out = body(torch.empty(1, 3, size, size, device='meta'))
    except Exception: return                       # the whole model ran at this size: the real run will tell
    if not (torch.is_tensor(out) and out.dim() == 4):
        what = f'a {out.dim()}-D tensor' if torch.is_tensor(out) else f'a {type(out).__name__}'
        raise ValueError(f"`arch` {name!r} is not an image classification backbone: the body fastai cuts from it "
                         f"gives {what}, not a feature map (N, C, H, W)")


def _fastai_body(model:nn.Module, arch, name:str) -> nn.Module:
    "The body fastai's `create_body` cuts from `model` (as `vision_learner` will), or a one-line refusal."
    from fastai.vision.all import create_body, model_meta
    try: body = create_body(model, pretrained=False, cut=model_meta.get(arch, {}).get('cut'))
    except Exception as e:
        raise ValueError(f"`arch` {name!r} is not an image classification backbone: fastai's create_body cannot cut "
                         f"it ({_first_line(e)})") from None
    if not any(True for _ in body.parameters()):
        raise ValueError(f"`arch` {name!r} is not an image classification backbone: fastai's create_body cuts it "
                         f"before its first layer (at the first child that holds a pooling layer), leaving no layers")
    return body


def _first_line(e:Exception) -> str: return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def check_input_size(model:nn.Module, size:int, arch:str, bs:int=1, device=None, in_chans:int=3):
    "Refuse, in one line, a `size` that `model` cannot take or whose activations for `bs` images cannot fit in memory."
    reason = not_an_image_model(model)
    if reason: raise ValueError(f"`arch` {arch!r} is not an image classification backbone: {reason}")
    try: meta = copy.deepcopy(model).to('meta').eval()
    except Exception: return                       # cannot copy it: the real run will tell
    numel, hooks = [0], [m.register_forward_hook(
                             lambda m, i, o: numel.__setitem__(0, numel[0] + (o.numel() if torch.is_tensor(o) else 0)))
                         for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad(): meta(torch.empty(1, in_chans, size, size, device='meta'))
    except NotImplementedError: return             # an op without a meta kernel: the real run will tell
    except Exception as e:
        raise ValueError(f"`size` {size} does not work with {arch}: "
                         f"{_first_line(e)}") from None
    finally:
        for h in hooks: h.remove()
    need, free = 4 * bs * numel[0], available_memory(device)   # fp32 outputs of every layer, kept for the backward pass
    if need > free:
        raise ValueError(f"`size` {size} with `bs` {bs} needs at least {need / 2**30:.1f} GiB for {arch}'s "
                         f"activations, {free / 2**30:.1f} GiB are free here: use a smaller size or batch size")


def check_pretrained(arch, name:str) -> dict:
    "Find (or download) `arch`'s pretrained weights before any work; the `vision_learner` keywords that load them."
    # one line at once where they are missing and cannot be downloaded: which file, where it must go
    import timm, torchvision
    from timm.models import PretrainedCfg, resolve_pretrained_cfg
    from ..model.weights import checkpoint_file
    base = name.removeprefix('timm/')
    if isinstance(arch, str) or timm.is_model(base) and not getattr(arch, '__module__', '').startswith('torchvision'):
        cfg = resolve_pretrained_cfg(base)
    else:   # a torchvision builder: its default weights, where torchvision's loader looks (the torch hub cache)
        try: weights = torchvision.models.get_model_weights(arch).DEFAULT
        except (ValueError, KeyError, AttributeError): return {}   # no weights enum: the builder says what it can
        cfg = PretrainedCfg(url=weights.url, architecture=base, tag=weights.name.lower())
    file = checkpoint_file(cfg)
    # timm would ask the Hugging Face hub for a newer revision even with the file cached: hand it the file
    return dict(pretrained_cfg_overlay=dict(file=file)) if isinstance(arch, str) else {}
