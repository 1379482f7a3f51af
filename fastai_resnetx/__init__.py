"ResNetX (a folded ResNet), CNN building blocks and model-inspection tools for fastai."
__version__ = '0.1.0'

import warnings
# fastai.layers calls torch.jit.script at import time; torch 2.14 deprecates it. Not ours to fix, and noise for users.
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)

from .model.topology import *
from .model.layers import *
from .model.blocks import *
from .model.config import *
from .model.resnetx import *
from .model.archs import *
from .model.weights import *
from .inspection.build import *
from .inspection.arch_summary import *
from .inspection.splitter import *
from .inspection.flops import *
from .integration.fastai_meta import *
from .integration import timm_registry  # registers every arch with timm (its entry points share our names: no star-import)
from .integration.learner_summary import *
from .integration.distributed import *
from .integration.precision import *
from .job.data import *
from .job.plots import *
from .job.train import *
