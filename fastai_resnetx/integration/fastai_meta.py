"fastai integration data: `model_meta` entries (cut, split, stats, weights) for every ResNetX arch."
from torch import nn
from fastai.vision.learner import model_meta
from fastai.vision.core import imagenet_stats

from ..inspection.splitter import arch_splitter
from ..model.resnetx import ResNetX, resnetx18, resnetx34, resnetx50, resnetx101, resnetx152, resnetx_mbconv, resnetx_fused

__all__ = ['resnetx_cut', 'RESNETX_ARCHS']

RESNETX_ARCHS = [resnetx18, resnetx34, resnetx50, resnetx101, resnetx152, resnetx_mbconv, resnetx_fused]


def resnetx_cut(model:ResNetX) -> nn.Sequential:
    "fastai body of a ResNetX: the model without its head, wrapped so `Sequential(*body.children())` still runs it."
    if not isinstance(model, ResNetX):
        raise TypeError(f"`model` must be a ResNetX, got {type(model).__name__}")
    model.head = nn.Identity()
    return nn.Sequential(model)


for _arch in RESNETX_ARCHS:
    _meta = {'cut': resnetx_cut, 'split': arch_splitter, 'stats': imagenet_stats}  # groups derived from the structure
    if _arch not in (resnetx_mbconv, resnetx_fused): _meta['weights'] = 'DEFAULT'  # fastai then calls arch(weights=...)
    model_meta[_arch] = _meta
