"ResNetX (a folded ResNet), CNN building blocks and model-inspection tools for fastai."
__version__ = '0.1.0'

from .topology import *
from .layers import *
from .blocks import *
from .config import *
from .resnetx import *
from .weights import *
from .arch_summary import *
from .splitter import *
