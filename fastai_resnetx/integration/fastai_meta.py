"fastai integration data: `model_meta` entries (cut, split, stats, weights) for every ResNetX arch."
from fastai.vision.learner import model_meta
from fastai.vision.core import imagenet_stats

from ..inspection.splitter import arch_splitter
from ..model.archs import ARCHS, resnetx_mbconv, resnetx_fused

__all__ = ['RESNETX_ARCHS']

RESNETX_ARCHS = ARCHS

for _arch in ARCHS:
    # cut=-2: the body is every child before `global_pool` and `fc` (stem layers and stages), as for torchvision's ResNet
    _meta = {'cut': -2, 'split': arch_splitter, 'stats': imagenet_stats}  # groups derived from the structure
    if _arch not in (resnetx_mbconv, resnetx_fused): _meta['weights'] = 'DEFAULT'  # fastai then calls arch(weights=...)
    model_meta[_arch] = _meta
