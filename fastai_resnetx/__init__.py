"ResNetX (a folded ResNet), CNN building blocks and model-inspection tools for fastai."
__version__ = '0.1.0'

# first: the `resnetx` command's clock starts when its first module is imported (`python -m fastai_resnetx` starts here)
from resnetx_cli import runs as _runs
import warnings as _warnings
with _warnings.catch_warnings():
    # fastai.layers calls torch.jit.script when it is first imported, which torch 2.14 deprecates: fastai's to fix and
    # noise for our users. Silenced for that one import only; the process's warning filters stay as they were.
    _warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
    import fastai.layers as _fastai_layers

from .model.topology import *
from .model.layers import *
from .model.blocks import *
from .model.config import *
from .model.resnetx import *
from .model.archs import *
from .model.family import fold_resnet          # fold any timm/torchvision ResNet
from .model.family_archs import folded
from .model.weights import *
from .inspection.build import *
from .inspection.arch_summary import *
from .inspection.splitter import *
from .inspection.flops import *
from .integration.fastai_meta import *
from .integration import timm_registry  # registers every arch with timm (its entry points share our names)
from .integration.learner_summary import *
from .integration.distributed import *
from .integration.precision import *
from .integration import patches   # fastai methods this package adds or replaces, each with its reason
from .job.plots import plot_topology

# The star import is the user API alone: none of it replaces a fastai or fastcore name after
# `from fastai.vision.all import *`, and no module objects (tests/test_star_import.py checks both). Everything else is
# importable from its module: the helpers (`fastai_resnetx.model.layers.conv_norm_act`), the fold rule's original
# names (`fastai_resnetx.model.topology.get_pred`) and the training job (`fastai_resnetx.job.train.train`).
__all__ = [
    'fold_resnet', 'folded', 'folded_arch',   # fold timm's and torchvision's ResNets
    # the archs and the model
    'resnetx18', 'resnetx34', 'resnetx50', 'resnetx101', 'resnetx152', 'resnetx_mbconv', 'resnetx_fused',
    'resnetx_small', 'resnetx20', 'RESNETX_ARCHS', 'ResNetX', 'ResNetXConfig', 'create_resnetx', 'num_params',
    'detach_carry',   # what a user keeps of a stage output, without the earlier outputs it carries
    # blocks (fastai's `ResBlock` keeps its name: ours is `AvgPoolResBlock`)
    'Block', 'BasicBlock', 'Bottleneck', 'LinearBottleneck', 'InvertedResidual', 'DepthwiseSeparableConv', 'MBConv',
    'FusedMBConv', 'AvgPoolResBlock', 'ConvNormAct', 'SqueezeExcitation',
    # the fold rule
    'skip_source', 'fold_plan', 'FoldPlan',
    # inspection
    'arch_summary', 'get_module', 'model_summary', 'arch_splitter', 'arch_groups', 'stage_splitter', 'plot_topology',
    # fastai entry points: vision_learner's arch, pretrained weights, precision, distributed training
    'resnetx_arch', 'load_pretrained', 'BF16MixedPrecision', 'pick_precision', 'distrib_kwargs',
]
