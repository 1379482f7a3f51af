"Every ResNetX arch in timm's registry: `timm.create_model('resnetx50', fold=2)` calls `fastai_resnetx.resnetx50`."
from timm.models import register_model

from ..model.archs import ARCHS
from ..model.family_archs import FOLDED_ARCHS

__all__ = []  # registration happens on import; the entry points are exported by `model.archs`

for _arch in ARCHS: register_model(_arch)   # timm reads their pretrained cfgs from `archs.default_cfgs`
# folded_<timm resnet>, folded_tv_<torchvision resnet>: `family_archs`
for _arch in FOLDED_ARCHS: register_model(_arch)
