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
from .model.family import fold_resnet          # issue 20: fold any timm/torchvision ResNet
from .model.family_archs import folded
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

# The star import: names a user reaches for, none of which replaces a fastai or fastcore name after
# `from fastai.vision.all import *` (tests/test_star_import.py checks it), and no module objects.
# Everything else stays importable by name from its module (e.g. `fastai_resnetx.job.train.fit_batch_size`).
__all__ = [
    'fold_resnet', 'folded', 'folded_arch',   # fold timm's and torchvision's ResNets (issue 20)
    # the fold rule
    'skip_source', 'stage_of', 'stage_distance', 'FoldPlan', 'fold_plan', 'get_pred', 'layer_diff',
    # layers and blocks (seed 001's `ResBlock` is `AvgPoolResBlock`: fastai's `ResBlock` keeps its name)
    'act_layer', 'get_act', 'ConvNormAct', 'Conv1x1NormAct', 'Conv3x3NormAct', 'conv_norm_act', 'ResidualAdd',
    'SqueezeExcitation', 'projection', 'resnet_stem', 'deep_stem',
    'Block', 'BasicBlock', 'Bottleneck', 'LinearBottleneck', 'InvertedResidual', 'DepthwiseSeparableConv', 'MBConv',
    'FusedMBConv', 'AvgPoolResBlock', 'residual_block', 'BLOCKS', 'get_block',
    # the model and its archs
    'ResNetXConfig', 'RESNETX_CONFIGS', 'UnknownConfigKeyError', 'FoldUnit', 'Stage', 'ResNetX', 'num_params', 'create_resnetx',
    'resnetx18', 'resnetx34', 'resnetx50', 'resnetx101', 'resnetx152', 'resnetx_mbconv', 'resnetx_fused', 'RESNETX_ARCHS',
    # pretrained weights
    'load_pretrained', 'PRETRAINED_TAGS', 'pretrained_tags', 'checkpoint_file', 'WeightsReport', 'CheckpointError', 'CHECKPOINT_SUFFIXES', 'read_checkpoint',
    'torchvision_weights', 'map_state_dict', 'resnet_key', 'resnet_counterpart',
    # inspection: build, arch summaries, layer groups, FLOPs
    'arch_from_name', 'build_by_name', 'build_arch', 'build_on_meta', 'WEIGHTS_OFF', 'TimmName', 'weights_off_kwargs',
    'random_init_kwargs', 'ArchRow', 'ArchSummary', 'build_model', 'get_module', 'n_layers', 'arch_summary',
    'LayerGroup', 'arch_groups', 'arch_splitter', 'stage_splitter',
    'CONVENTION', 'SummaryRow', 'ModelSummary', 'model_summary',
    # fastai, distributed training, precision
    'resnetx_arch', 'learner_table', 'model_inputs', 'distrib_kwargs',
    'BF16MixedPrecision', 'NonFiniteGradientsError', 'machine_kind', 'BF16_TRAIN_SPEEDUP', 'pick_precision', 'apply_precision', 'PRECISIONS',
    # data, plots and the main job
    'DigitImage', 'DigitLabel', 'open_image', 'FolderLabel', 'FolderItems', 'read_folder', 'find_images',
    'available_memory', 'digits_split_sizes', 'digits_dls', 'folder_dls', 'VALID_FOLDERS',
    'skip_kinds', 'plot_topology', 'plot_confusion_matrix', 'TRAIN_DEFAULTS', 'TrainSettings', 'train',
]
