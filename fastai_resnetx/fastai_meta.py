"fastai integration data: `model_meta` entries (cut, split, stats, weights) for every ResNetX arch."
from torch import nn
from fastcore.all import L
from fastai.vision.learner import model_meta
from fastai.vision.core import imagenet_stats
from fastai.torch_core import params

from .resnetx import ResNetX, resnetx18, resnetx34, resnetx50, resnetx101, resnetx152, resnetx_mbconv, resnetx_fused

__all__ = ['resnetx_cut', 'resnetx_split', 'RESNETX_ARCHS']

RESNETX_ARCHS = [resnetx18, resnetx34, resnetx50, resnetx101, resnetx152, resnetx_mbconv, resnetx_fused]


def resnetx_cut(model:ResNetX) -> nn.Sequential:
    "fastai body of a ResNetX: the model without its head, wrapped so `Sequential(*body.children())` still runs it."
    if not isinstance(model, ResNetX):
        raise TypeError(f"`model` must be a ResNetX, got {type(model).__name__}")
    model.head = nn.Identity()
    return nn.Sequential(model)


def _find_resnetx(model:nn.Module) -> ResNetX:
    for m in model.modules():
        if isinstance(m, ResNetX): return m
    raise TypeError(f"`model` holds no ResNetX (got {type(model).__name__})")


def resnetx_split(model:nn.Module):
    "Three layer groups of a fastai ResNetX learner model: stem and the first half of the stages, the rest, the head."
    body = _find_resnetx(model)
    stages = body.stages
    half = (len(stages) + 1) // 2
    head = model[1:] if isinstance(model, nn.Sequential) and len(model) > 1 else body.head
    return L(nn.ModuleList([body.stem, *stages[:half]]), nn.ModuleList(stages[half:]), head).map(params)


for _arch in RESNETX_ARCHS:
    _meta = {'cut': resnetx_cut, 'split': resnetx_split, 'stats': imagenet_stats}
    if _arch not in (resnetx_mbconv, resnetx_fused): _meta['weights'] = 'DEFAULT'  # fastai then calls arch(weights=...)
    model_meta[_arch] = _meta
