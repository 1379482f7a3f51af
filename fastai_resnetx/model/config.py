"A ResNetX is described by a small dataclass that can come from a dict or a YAML file, overridden by keywords."
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

__all__ = ['ResNetXConfig']


@dataclass(frozen=True)
class ResNetXConfig:
    "Everything that defines a ResNetX: layout, unit, widths, fold window, stem, shortcut and head."
    num_nodes: tuple = (3, 4, 6, 3)       # units per stage
    unit: str = 'bottleneck'              # a name in `blocks.BLOCKS`
    widths: tuple = (256, 512, 1024, 2048)  # output channels of each stage
    strides: tuple = (1, 2, 2, 2)         # stride of the first unit of each stage
    stem: str = 'resnet'                  # 'resnet' (7x7) or 'deep' (3 x 3x3, fastai xresnet)
    stem_width: int = 64
    fold: int = 1
    start_id: int = None                  # default: `fold`
    end_id: int = None                    # default: the last unit
    shortcut: str = 'conv'                # projection kind: 'conv' (torchvision) or 'avgpool' (seed 001, ResNet-D)
    act: str = 'relu'                     # activation after each add (and default in the units)
    n_out: int = 1000
    c_in: int = 3
    drop: float = 0.                      # dropout before the classifier
    zero_init_last_bn: bool = False       # zero-init each unit's last norm weight (fastai/timm option)
    unit_kwargs: dict = field(default_factory=dict)  # passed to every unit, e.g. {'expansion': 4}

    def __post_init__(self):
        for name in ('num_nodes', 'widths', 'strides'):
            value = getattr(self, name)
            if isinstance(value, list): object.__setattr__(self, name, tuple(value))
        if len(self.widths) != len(self.num_nodes) or len(self.strides) != len(self.num_nodes):
            raise ValueError(f"`widths` {self.widths} and `strides` {self.strides} need one entry per stage "
                             f"of `num_nodes` {self.num_nodes}")
        if isinstance(self.n_out, bool) or not isinstance(self.n_out, int) or self.n_out < 1:
            raise ValueError(f"`n_out` must be an integer >= 1, got {self.n_out!r}")
        if isinstance(self.c_in, bool) or not isinstance(self.c_in, int) or self.c_in < 1:
            raise ValueError(f"`c_in` must be an integer >= 1, got {self.c_in!r}")
        if self.stem not in ('resnet', 'deep'):
            raise ValueError(f"`stem` must be 'resnet' or 'deep', got {self.stem!r}")
        if self.shortcut not in ('conv', 'avgpool'):
            raise ValueError(f"`shortcut` must be 'conv' or 'avgpool', got {self.shortcut!r}")

    @classmethod
    def from_dict(cls, d:dict, **overrides):
        "A config from a dict (e.g. parsed YAML), then `overrides`; unknown keys are an error."
        d = {**(d or {}), **overrides}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown: raise ValueError(f"unknown ResNetX config keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path, **overrides):
        "A config from a YAML file (read with `yaml.safe_load`), then `overrides`."
        path = Path(path)
        if not path.is_file(): raise ValueError(f"config file {str(path)!r} does not exist")
        d = yaml.safe_load(path.read_text()) or {}
        if not isinstance(d, dict): raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(d).__name__}")
        return cls.from_dict(d, **overrides)

    def replace(self, **overrides):
        "A copy with `overrides` applied (unknown keys are an error)."
        return type(self).from_dict(dataclasses.asdict(self), **overrides)

    def to_dict(self) -> dict:
        "The config as a plain dict (YAML-friendly)."
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
