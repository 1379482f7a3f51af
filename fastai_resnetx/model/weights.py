"Pretrained weights for ResNetX: the ResNet <-> ResNetX name mapping, the sources (torchvision, timm, a file), a safe loader."
import os, pickle, re, sys, warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn, Tensor

from .config import RESNETX_CONFIGS

__all__ = ['resnet_key', 'CheckpointError', 'TimmWeights', 'WeightsReport', 'CHECKPOINT_SUFFIXES', 'resnet_counterpart',
           'read_checkpoint', 'torchvision_weights', 'torchvision_state_dict', 'timm_state_dict', 'map_state_dict',
           'load_pretrained']

_UNIT_KEY = re.compile(r'^stage(\d+)\.(\d+)\.(branch|shortcut)\.(.+)$')


def resnet_key(resnetx_key:str):
    "The torchvision/timm ResNet state-dict key of a ResNetX (basic/bottleneck) key, or None if it has none."
    # the stem and classifier are named as torchvision's; a unit's branch layers are its block's, its shortcut its downsample
    m = _UNIT_KEY.match(resnetx_key)
    if m: return f"layer{m[1]}.{m[2]}.{'' if m[3] == 'branch' else 'downsample.'}{m[4]}"
    return resnetx_key if re.match(r'^(conv1|bn1|fc)\.[^.]+$', resnetx_key) else None


class CheckpointError(ValueError):
    "A checkpoint that cannot be used: missing, unreadable, unsafe, or not fitting the model. Nothing was loaded."


@dataclass(frozen=True)
class TimmWeights:
    "timm's pretrained weights `name` of a ResNet ('resnet50.a1_in1k'), optionally read from a local `file` by timm's loader."
    name: str
    file: str = None


@dataclass
class WeightsReport:
    "What a load did: which model tensors were loaded, adapted, kept new or skipped, and which source tensors went unused."
    source: str
    loaded: list = field(default_factory=list)       # model keys copied from the source (adapted ones included)
    adapted: list = field(default_factory=list)      # loaded after adapting: the first conv when `c_in` differs
    new_keys: list = field(default_factory=list)     # no counterpart in the source: keep their init (extra projections)
    skipped: list = field(default_factory=list)      # a counterpart not loaded on purpose: the classifier when `n_out` differs
    unused_keys: list = field(default_factory=list)  # source keys nothing reads (a downsample where ResNetX has no projection)


CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt', '.safetensors')
_RESNETS = ('resnetx18', 'resnetx34', 'resnetx50', 'resnetx101', 'resnetx152')
# the fields that decide which tensors a ResNetX has (fold, n_out, c_in, act, ... do not make it another ResNet)
_LAYOUT = ('num_nodes', 'unit', 'widths', 'strides', 'stem', 'stem_width', 'shortcut', 'unit_kwargs')
_COUNTER = re.compile(r'(^|\.)num_batches_tracked$')


def resnet_counterpart(cfg):
    "The torchvision/timm ResNet ('resnet50') whose weights fit the ResNetX config `cfg`, or None if there is none."
    for name in _RESNETS:
        if all(getattr(cfg, f) == getattr(RESNETX_CONFIGS[name], f) for f in _LAYOUT): return name.replace('resnetx', 'resnet')
    return None


def _checkpoint_error(path, e:Exception) -> CheckpointError:
    "A clear error for a file that `torch.load(weights_only=True)` or safetensors could not read."
    if isinstance(e, pickle.UnpicklingError) and 'GLOBAL' in str(e):
        detail = next((l.strip() for l in str(e).splitlines() if 'GLOBAL' in l), '')
        return CheckpointError(f"refused to load {str(path)!r}: it is a pickle that would import and run code ({detail}). "
                               f"Checkpoints are read with weights_only=True; if you trust the file, load it yourself and "
                               f"re-save its state dict (torch.save(model.state_dict(), ...) or safetensors)")
    return CheckpointError(f"could not read checkpoint {str(path)!r}: corrupted, truncated or not a checkpoint "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})")


def _state_dict_of(obj, where:str) -> dict:
    "The tensors of a loaded checkpoint, unwrapping {'state_dict': ...} / {'model': ...} (fastai's `Learner.save` with opt)."
    if isinstance(obj, Mapping):
        for key in ('state_dict', 'model'):
            if isinstance(obj.get(key), Mapping): obj = obj[key]; break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where} does not hold a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad: raise CheckpointError(f"{where} is not a state dict: entries {bad[:5]} are not str -> tensor")
    return dict(obj)


def read_checkpoint(path) -> dict:
    "The state dict in a `.pth`/`.pt`/`.bin` file (read with `weights_only=True`) or a `.safetensors` file."
    path = Path(path).expanduser()
    if not path.is_file(): raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file
            obj = load_file(path, device='cpu')
        else: obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e: raise _checkpoint_error(path, e) from e
    return _state_dict_of(obj, f"checkpoint file {str(path)!r}")


def torchvision_weights(arch:str, weights='DEFAULT'):
    "torchvision's `Weights` member for ResNet `arch` ('resnet50') from a name ('IMAGENET1K_V2', 'DEFAULT') or a member."
    from torchvision.models import get_model_weights
    from torchvision.models._api import WeightsEnum
    enum = get_model_weights(arch)
    allowed = list(enum.__members__)
    if isinstance(weights, enum): return weights
    if isinstance(weights, str):
        name = weights[len(enum.__name__) + 1:] if weights.startswith(enum.__name__ + '.') else weights
        if name in enum.__members__: return enum[name]
    hint = ' (those are for another model)' if isinstance(weights, WeightsEnum) else ''
    raise ValueError(f"`weights`={weights!r}{hint} is not torchvision weights of {arch}; allowed: {allowed} or a "
                     f"{enum.__name__} member, 'timm:<name>', a TimmWeights, a {'/'.join(CHECKPOINT_SUFFIXES)} file "
                     f"or a state dict")


def _hub_file(url:str) -> Path:
    "Where torch hub caches the file at `url`: $TORCH_HOME/hub/checkpoints/<its file name>."
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(urlparse(url).path)


def torchvision_state_dict(weights) -> dict:
    "The state dict of torchvision `Weights` member `weights`, from the torch hub cache (downloaded there if missing)."
    file = _hub_file(weights.url)
    # torchvision's own loader: it reads `file` when it is cached and only downloads (checking the hash) when it is not
    try: obj = weights.get_state_dict(progress=False, check_hash=True, map_location='cpu', weights_only=True)
    except Exception as e:
        if file.is_file(): raise _checkpoint_error(file, e) from e
        raise CheckpointError(f"could not download {weights} from {weights.url} ({type(e).__name__}: {e}). On a machine "
                              f"with no internet, copy that file to {str(file)!r} (the torch hub cache, under $TORCH_HOME) "
                              f"or pass weights='path/to/file.pth'") from e
    return _state_dict_of(obj, f"cached file {str(file)!r}")


def _cached_timm_file(name:str):
    "A file that already holds timm weights `name`: in the Hugging Face cache or the torch hub cache; None if none does."
    import timm
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None: return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        repo, _, revision = cfg.hf_hub_id.partition('@')
        for fname in [cfg.hf_hub_filename] if cfg.hf_hub_filename else ['model.safetensors', 'pytorch_model.bin']:
            path = try_to_load_from_cache(repo, fname, revision=revision or None)
            if isinstance(path, str): return path
    if cfg.url and _hub_file(cfg.url).is_file(): return str(_hub_file(cfg.url))
    return None


def timm_state_dict(name:str, file=None, arch:str=None) -> dict:
    "The state dict of timm ResNet `name` as timm's loader fills it, from `file`, a cached file (no network) or a download."
    import timm
    model_arch, tag = timm.models.split_model_name_tag(name)
    if arch is not None and model_arch != arch:
        raise ValueError(f"timm weights {name!r} are for {model_arch!r}; this model takes those of {arch!r}: "
                         f"{timm.list_pretrained(arch + '.*')}")
    if tag and name not in timm.list_pretrained(model_arch + '.*'):
        raise ValueError(f"timm has no pretrained weights {name!r}; allowed: {timm.list_pretrained(model_arch + '.*')}")
    file = file if file is not None else _cached_timm_file(name)
    # a known file is read here, safely, and handed to timm; only with no file does timm download (and cache) it
    overlay = {} if file is None else dict(state_dict=read_checkpoint(file))
    try: model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as e:
        if file is not None:
            raise CheckpointError(f"checkpoint file {str(file)!r} does not fit timm's {name!r}: {e}") from e
        raise CheckpointError(f"timm could not get weights {name!r} ({type(e).__name__}: {e}). On a machine with no "
                              f"internet, fill timm's cache (the Hugging Face cache, $HF_HOME) beforehand or pass "
                              f"TimmWeights({name!r}, file='path/to/file.safetensors')") from e
    return model.state_dict()


def _projection_of(key:str):
    "The shortcut module a key belongs to ('stage2.1.shortcut'), or None."
    return key[:key.index('.shortcut.') + len('.shortcut')] if '.shortcut.' in key else None


def _first_conv_key(state:dict) -> str: return next(k for k, v in state.items() if v.ndim == 4)


def _adapt_first_conv(w:Tensor, c_in:int) -> Tensor:
    "Adapt a 3-channel first conv to `c_in` channels the way timm and fastai do (sum for 1, repeat and rescale for more)."
    from timm.models import adapt_input_conv
    return adapt_input_conv(c_in, w)


def _resnet_shapes(arch:str) -> dict:
    "Key -> shape of torchvision's ResNet `arch`, built on the meta device (no memory, no compute)."
    import torchvision
    with torch.device('meta'): model = getattr(torchvision.models, arch)()
    return {k: v.shape for k, v in model.state_dict().items()}


_KINDS = (('missing key', 'missing keys'), ('unexpected key', 'unexpected keys'), ('shape mismatch', 'shape mismatches'))

def _kind(msg:str) -> int: return next((i for i, (prefix, _) in enumerate(_KINDS) if msg.startswith(prefix)), len(_KINDS))

def _problem_list(problems, per_kind:int=10) -> str:
    "Problems grouped by kind (missing, unexpected, shape), at most `per_kind` of each, with counts in a header."
    groups = {}
    for m in problems: groups.setdefault(_kind(m), []).append(m)
    labels = [label for _, label in _KINDS] + ['other problems']
    head = ', '.join(f'{len(groups[i])} {labels[i]}' for i in sorted(groups))
    lines = [l for i in sorted(groups) for l in groups[i][:per_kind] +
             ([f'... and {len(groups[i]) - per_kind} more {labels[i]}'] if len(groups[i]) > per_kind else [])]
    return f"({head}); nothing was loaded:\n  " + '\n  '.join(lines)


def map_state_dict(model:nn.Module, state_dict:dict, source:str='the state dict'):
    "Check all of `state_dict` (ResNet or ResNetX keys) against `model`: the full state dict to load and a `WeightsReport`."
    target = model.state_dict()
    resnetx_keys = any(k.startswith('stage') for k in state_dict)
    if resnetx_keys:   # a file saved from a ResNetX: it must be this very architecture
        key_of, expected, arch = (lambda k: k), {k: v.shape for k, v in target.items()}, 'this ResNetX'
    else:
        arch = resnet_counterpart(model.cfg)
        if arch is None:
            raise CheckpointError(f"{source} has ResNet keys, but this ResNetX (unit={model.cfg.unit!r}, num_nodes="
                                  f"{model.cfg.num_nodes}) has no ResNet counterpart: ResNet weights fit the layouts of "
                                  f"{list(_RESNETS)} only. Pass a file saved from this very architecture")
        key_of, expected = resnet_key, _resnet_shapes(arch)
    first, head = _first_conv_key(target), ('fc.weight', 'fc.bias')
    flexible = {key_of(first)} | {key_of(k) for k in head}   # their shapes are checked against the model below
    # old checkpoints have no BatchNorm counters: they start at 0, as `load_state_dict` would set them
    sd = {**{k: torch.tensor(0) for k in expected if _COUNTER.search(k)}, **state_dict}
    problems = {}
    for k, v in sd.items():
        if k not in expected: problems[k] = f'unexpected key {k!r} {tuple(v.shape)}'
        elif k not in flexible and v.shape != expected[k]:
            problems[k] = f'shape mismatch for {k!r}: {tuple(v.shape)} in the checkpoint, {tuple(expected[k])} in {arch}'
    for k in expected:
        if k not in sd and k not in flexible: problems[k] = f'missing key {k!r} {tuple(expected[k])}'
    # a projection is loaded whole or not at all: its conv and norm come from one downsample of the same shape
    fits = lambda k: key_of(k) in sd and sd[key_of(k)].shape == target[k].shape
    new_projections = set() if resnetx_keys else {_projection_of(k) for k in target if _projection_of(k) and not fits(k)}
    full, report, used = dict(target), WeightsReport(source), set()
    for k, t in target.items():
        src = key_of(k)
        v = sd.get(src) if src is not None else None
        if _projection_of(k) in new_projections: report.new_keys.append(k); continue
        if v is not None and v.shape == t.shape: full[k] = v
        elif k in head: report.skipped.append(k); continue
        elif k == first and v is not None and v.shape[1] == 3 and v.shape[0] == t.shape[0] and v.shape[2:] == t.shape[2:]:
            full[k] = _adapt_first_conv(v, t.shape[1]); report.adapted.append(k)
        elif v is None: problems.setdefault(src or k, f'{k!r} has no counterpart{f" {src!r}" if src else ""} in {source}')
        else: problems.setdefault(src, f'shape mismatch for {src!r}: {tuple(v.shape)} in the checkpoint, {tuple(t.shape)} '
                                       f'needed for {k!r}')
        report.loaded.append(k); used.add(src)
    if problems:
        raise CheckpointError(f"{source} does not fit {arch} " + _problem_list(problems.values()))
    report.unused_keys = [k for k in state_dict if k not in used]
    return full, report


def _is_file_like(weights) -> bool:
    if isinstance(weights, os.PathLike): return True
    return isinstance(weights, str) and (weights.lower().endswith(CHECKPOINT_SUFFIXES) or '/' in weights or os.sep in weights
                                         or Path(weights).expanduser().is_file())


def _fetch(model:nn.Module, weights):
    "The state dict named by `weights` and a description of where it came from."
    if isinstance(weights, Mapping): return _state_dict_of(weights, '`weights`'), 'the given state dict'
    if isinstance(weights, str) and weights.startswith('timm:'): weights = TimmWeights(weights[len('timm:'):])
    from torchvision.models._api import WeightsEnum
    if not (weights is True or isinstance(weights, (str, os.PathLike, TimmWeights, WeightsEnum))):
        raise ValueError(f"`weights` must be True, a torchvision weights name ('DEFAULT', 'IMAGENET1K_V1', 'IMAGENET1K_V2') "
                         f"or member, 'timm:<name>', a TimmWeights, a {'/'.join(CHECKPOINT_SUFFIXES)} file or a state "
                         f"dict; got {weights!r}")
    if not isinstance(weights, TimmWeights) and _is_file_like(weights):
        return read_checkpoint(weights), f"checkpoint file {str(weights)!r}"
    arch = resnet_counterpart(model.cfg)
    if arch is None:
        raise ValueError(f"ResNet weights (weights={weights!r}) cannot fill this ResNetX (unit={model.cfg.unit!r}, "
                         f"num_nodes={model.cfg.num_nodes}): it has no ResNet counterpart (only the layouts of "
                         f"{list(_RESNETS)} have one). Pass weights='path/to/file.pth' saved from this very "
                         f"architecture, or pretrained=False")
    if isinstance(weights, TimmWeights):
        where = f" (file {str(weights.file)!r})" if weights.file is not None else ''
        return timm_state_dict(weights.name, weights.file, arch=arch), f"timm weights {weights.name!r}{where}"
    member = torchvision_weights(arch, 'DEFAULT' if weights is True else weights)
    return torchvision_state_dict(member), f"torchvision {member} ({str(_hub_file(member.url))!r})"


def _caller_level() -> int:
    "The `stacklevel` of the first frame outside this package, so that a warning points at the user's line."
    frame, level, here = sys._getframe(1), 1, os.path.dirname(os.path.dirname(__file__))  # the package root
    while frame is not None and frame.f_code.co_filename.startswith(here): frame, level = frame.f_back, level + 1
    return level


def load_pretrained(model:nn.Module, weights=True) -> nn.Module:
    "Load `weights` (True, a torchvision name or member, 'timm:<name>', `TimmWeights`, a file or a state dict) into `model`."
    if weights is None or weights is False: return model
    state_dict, source = _fetch(model, weights)
    full, report = map_state_dict(model, state_dict, source)   # raises before anything is copied
    model.load_state_dict(full, strict=True)
    model.pretrained_report, model.new_keys, model.unused_keys = report, report.new_keys, report.unused_keys
    if report.new_keys:
        projections = list(dict.fromkeys(_projection_of(k) for k in report.new_keys))
        warnings.warn(f"{len(report.new_keys)} tensors of {len(projections)} projections have no counterpart in {source} "
                      f"and keep their initialisation ({', '.join(projections)}); see `model.new_keys`",
                      stacklevel=_caller_level())
    return model
