"A ResNetX is described by a small dataclass that can come from a dict or a YAML file, overridden by keywords."
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..checks import check_int, check_float, check_choice
from .topology import fold_plan
from .layers import get_act, STEM_STRIDE
from .blocks import get_block

__all__ = ['ResNetXConfig', 'RESNETX_CONFIGS', 'UnknownConfigKeyError']

# fastai's spellings (xresnet's `n_out`, `c_in`) and the original ResNetX code's `num_nodes` are accepted;
# timm's names (and `num_units`) are the canonical ones
ALIASES = {'n_out': 'num_classes', 'c_in': 'in_chans', 'drop': 'drop_rate', 'num_nodes': 'num_units'}
POOL_TYPES = ('avg', 'max', 'avgmax', 'catavgmax', '')   # timm's `SelectAdaptivePool2d` types ('': no pooling)


class UnknownConfigKeyError(TypeError, ValueError):
    "A keyword no config field has: a `TypeError` as Python's 'unexpected keyword argument' (what timm expects)."


def _int_tuple(name, value, minimum=1):
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"`{name}` must be a non-empty list of integers >= {minimum}, got {value!r}")
    return tuple(check_int(f'{name}[{i}]', v, minimum) for i, v in enumerate(value))


@dataclass(frozen=True)
class ResNetXConfig:
    "Everything that defines a ResNetX: layout, unit, widths, fold window, stem, shortcut and head."
    num_units: tuple = (3, 4, 6, 3)       # units per stage
    unit: str = 'bottleneck'              # a name in `blocks.BLOCKS` (or a block class)
    widths: tuple = (256, 512, 1024, 2048)  # output channels of each stage
    strides: tuple = (1, 2, 2, 2)         # stride of the first unit of each stage
    stem: str = 'resnet'                  # 'resnet' (7x7), 'deep' (3 x 3x3, fastai xresnet) or 'small' (3x3, stride 1)
    stem_width: int = 64
    fold: int = 1
    start_id: int = None                  # default: `fold`
    end_id: int = None                    # default: the last unit
    stage_local: bool = False             # clip each skip source to its stage's input: no skip crosses a stage
    shortcut: str = 'conv'                # projection kind: 'conv' (torchvision) or 'avgpool' (ResNet-D)
    act: str = 'relu'                     # activation after each add (and default in the units)
    num_classes: int = 1000               # 0: no classifier (features out); fastai's name `n_out` is accepted
    in_chans: int = 3                     # input channels; fastai's name `c_in` is accepted
    global_pool: str = 'avg'              # timm's pooling type: 'avg', 'max', 'avgmax', 'catavgmax', '' (none)
    drop_rate: float = 0.                 # dropout before the classifier
    # stochastic depth: rate of the last unit, growing linearly from 0 at the first
    drop_path_rate: float = 0.
    zero_init_last_bn: bool = False       # zero-init each unit's last norm weight (fastai/timm option)
    output_stride: int = 32               # 16 or 8: the last stages dilate instead of striding (timm's ResNet, DeepLab)
    unit_kwargs: dict = field(default_factory=dict)  # passed to every unit, e.g. {'expansion': 4}

    def __post_init__(self):
        for name in ('num_units', 'widths', 'strides'):
            object.__setattr__(self, name, _int_tuple(name, getattr(self, name)))
        if len(self.widths) != len(self.num_units) or len(self.strides) != len(self.num_units):
            raise ValueError(f"`widths` {self.widths} and `strides` {self.strides} need one entry per stage "
                             f"of `num_units` {self.num_units}")
        get_block(self.unit)
        get_act(self.act)
        check_choice('stem', self.stem, tuple(STEM_STRIDE))
        check_int('stem_width', self.stem_width, 1)
        check_choice('stage_local', self.stage_local, (True, False))
        self.plan()   # checks fold, start_id and end_id
        check_choice('shortcut', self.shortcut, ('conv', 'avgpool'))
        check_int('num_classes', self.num_classes, 0)
        check_int('in_chans', self.in_chans, 1)
        check_choice('global_pool', self.global_pool, POOL_TYPES)
        if self.global_pool == '' and self.num_classes:
            raise ValueError(f"`global_pool=''` (no pooling) needs `num_classes=0` (no classifier), "
                             f"got {self.num_classes}")
        check_float('drop_rate', self.drop_rate, 0, 1, open_max=True)
        check_float('drop_path_rate', self.drop_path_rate, 0, 1, open_max=True)
        check_choice('zero_init_last_bn', self.zero_init_last_bn, (True, False))
        check_choice('output_stride', self.output_stride, (8, 16, 32))
        if not isinstance(self.unit_kwargs, dict):
            raise ValueError(f"`unit_kwargs` must be a mapping of keyword arguments, got {self.unit_kwargs!r}")

    @classmethod
    def from_dict(cls, d:dict, **overrides):
        "A config from a dict (e.g. parsed YAML), then `overrides`; unknown keys are an error."
        d = {ALIASES.get(k, k): v for k, v in {**(d or {}), **overrides}.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown: raise UnknownConfigKeyError(f"unknown ResNetX config keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path, **overrides):
        "A config from a YAML file (read with `yaml.safe_load`), then `overrides`; a bad value names the file and key."
        path = Path(path)
        if not path.is_file(): raise ValueError(f"config file {str(path)!r} does not exist")
        try: d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e: raise ValueError(f"config file {str(path)!r} is not valid YAML: {e}") from e
        d = d or {}
        if not isinstance(d, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(d).__name__}")
        try: return cls.from_dict(d, **overrides)
        except ValueError as e: raise ValueError(f"config file {str(path)!r}: {e}") from e

    def replace(self, **overrides):
        "A copy with `overrides` applied (unknown keys are an error)."
        return type(self).from_dict(dataclasses.asdict(self), **overrides)

    def plan(self):
        "The fold plan of this config (`fold_plan` of its layout, window and `stage_local`)."
        return fold_plan(self.num_units, self.fold, self.start_id, self.end_id, stage_local=self.stage_local)

    def stage_strides(self) -> tuple:
        "Stage strides and dilations for `output_stride`: once the net stride reaches it, stride 1 and dilate (timm)."
        net_stride, dilation, strides, dilations = STEM_STRIDE[self.stem][1], 1, [], []
        for stride in self.strides:
            if net_stride >= self.output_stride: dilation, stride = dilation * stride, 1
            else: net_stride *= stride
            strides.append(stride)
            dilations.append(dilation)
        return tuple(strides), tuple(dilations)

    def to_dict(self) -> dict:
        "The config as a plain dict (YAML-friendly)."
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# the named archs: torchvision's ResNet layouts, and two variants with other units
RESNETX_CONFIGS = {
    'resnetx18': ResNetXConfig((2, 2, 2, 2), 'basic', (64, 128, 256, 512)),
    'resnetx34': ResNetXConfig((3, 4, 6, 3), 'basic', (64, 128, 256, 512)),
    'resnetx50': ResNetXConfig((3, 4, 6, 3), 'bottleneck', (256, 512, 1024, 2048)),
    'resnetx101': ResNetXConfig((3, 4, 23, 3), 'bottleneck', (256, 512, 1024, 2048)),
    'resnetx152': ResNetXConfig((3, 8, 36, 3), 'bottleneck', (256, 512, 1024, 2048)),
    'resnetx_mbconv': ResNetXConfig((2, 3, 4, 2), 'mbconv', (48, 96, 192, 384), stem_width=32, act='silu',
                                    unit_kwargs={'expansion': 4, 'se_ratio': 0.25}),
    'resnetx_fused': ResNetXConfig((2, 3, 4, 2), 'fused_mbconv', (48, 96, 192, 384), stem_width=32, act='silu',
                                   unit_kwargs={'expansion': 4}),
    # for 28-32 px images (Fashion-MNIST, CIFAR): a 3x3 stride-1 stem and no max-pool keep 28x28 maps in stage 1; one
    # basic unit per stage, widths doubling from 16 (stage maps 28, 14, 7, 4 px): 93% on Fashion-MNIST in 5 epochs,
    # about 1 minute an epoch on 2 CPU cores (README, "Does folding help?")
    'resnetx_small': ResNetXConfig((1, 1, 1, 1), 'basic', (16, 32, 64, 128), stem='small', stem_width=16),
    # the CIFAR ResNet-20 of He et al. (three stages of three basic units, 16-32-64, 3x3 stem): three units a stage, so
    # a fold can stay inside a stage (`stage_local`), which one unit a stage cannot
    'resnetx20': ResNetXConfig((3, 3, 3), 'basic', (16, 32, 64), strides=(1, 2, 2), stem='small', stem_width=16),
}
