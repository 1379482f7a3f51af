"ResNetX (a folded ResNet), CNN building blocks and model-inspection tools for fastai."
__version__ = '0.1.0'

from .topology import *
from .layers import *
from .blocks import *
from .config import *
from .resnetx import *
from .weights import *
from .fastai_meta import *
from . import timm_registry  # registers every arch with timm (its entry points share our names: no star-import)
from .arch_summary import *
from .splitter import *
from .flops import *
from .learner_summary import *
from .distributed import *
from .plots import *
from .train import *
