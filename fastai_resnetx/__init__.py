"ResNetX (a folded ResNet), CNN building blocks and model-inspection tools for fastai."
__version__ = '0.1.0'

import warnings
# fastai.layers calls torch.jit.script at import time; torch 2.14 deprecates it. Not ours to fix, and noise for users.
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)

from .topology import *
from .layers import *
from .blocks import *
from .config import *
from .resnetx import *
from .weights import *
from .build import *
from .fastai_meta import *
from . import timm_registry  # registers every arch with timm (its entry points share our names: no star-import)
from .arch_summary import *
from .splitter import *
from .flops import *
from .learner_summary import *
from .distributed import *
from .plots import *
from .train import *
