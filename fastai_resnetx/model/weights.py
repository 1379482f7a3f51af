"""Pretrained weights for ResNetX: the ResNet -> ResNetX mapping (timm's `pretrained_filter_fn`), a safe checkpoint
reader, and where a pretrained cfg's file is (its `file`, a cache, or a download into that cache).

The sources themselves are data: the pretrained cfgs in `archs.py`. timm's `load_pretrained` does the rest (first-conv
adaptation for `in_chans != 3`, dropping a classifier of another size, the load)."""
import os, pickle, re, sys, warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn, Tensor
import timm
from timm.models import clean_state_dict

from .config import RESNETX_CONFIGS
from .resnetx import ResNetX

__all__ = ['resnet_key', 'CheckpointError', 'WeightsReport', 'CHECKPOINT_SUFFIXES', 'resnet_counterpart',
           'read_checkpoint', 'checkpoint_file', 'map_state_dict']

_UNIT_KEY = re.compile(r'^stage(\d+)\.(\d+)\.(branch|shortcut)\.(.+)$')
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt', '.safetensors')
# the archs with an ImageNet ResNet's layout (resnetx50: resnet50's); resnetx20 is CIFAR's ResNet-20, which has none
_RESNETS = ['resnetx18', 'resnetx34', 'resnetx50', 'resnetx101', 'resnetx152']
# the fields that decide which tensors a ResNetX has
# (fold, num_classes, in_chans, act, ... do not make it another ResNet)
_LAYOUT = ('num_units', 'unit', 'widths', 'strides', 'stem', 'stem_width', 'shortcut', 'unit_kwargs')
_COUNTER = re.compile(r'(^|\.)num_batches_tracked$')
FIRST_CONV, CLASSIFIER = 'conv1.weight', ('fc.weight', 'fc.bias')


def resnet_key(resnetx_key:str):
    "The torchvision/timm ResNet key of a ResNetX key: `stageN.i.branch.` -> `layerN.i.`, `shortcut` -> `downsample`."
    m = _UNIT_KEY.match(resnetx_key)
    if m: return f"layer{m[1]}.{m[2]}.{'' if m[3] == 'branch' else 'downsample.'}{m[4]}"
    # stem and classifier: same names
    return resnetx_key if re.match(r'^(conv1|bn1|fc)\.[^.]+$', resnetx_key) else None


def resnet_counterpart(cfg):
    "The torchvision/timm ResNet ('resnet50') whose weights fit the ResNetX config `cfg`, or None if there is none."
    for name in _RESNETS:
        if all(getattr(cfg, f) == getattr(RESNETX_CONFIGS[name], f) for f in _LAYOUT):
            return name.replace('resnetx', 'resnet')
    return None


class CheckpointError(ValueError):
    "A checkpoint that cannot be used: missing, unreadable, unsafe, or not fitting the model. Nothing was loaded."


@dataclass
class WeightsReport:
    "What a load did: which model tensors were loaded, adapted, kept new or skipped; which source tensors went unused."
    source: str
    loaded: list = field(default_factory=list)       # model keys filled from the source (adapted ones included)
    adapted: list = field(default_factory=list)      # the first conv, when timm adapts it to `in_chans`
    new_keys: list = field(default_factory=list)     # no counterpart in the source: keep their init (extra projections)
    skipped: list = field(default_factory=list)      # the classifier, when `num_classes` differs (timm drops it)
    # source keys nothing reads (a downsample where ResNetX has no projection)
    unused_keys: list = field(default_factory=list)


# ---- reading a file

def _checkpoint_error(path, e:Exception) -> CheckpointError:
    "A clear error for a file that `torch.load(weights_only=True)` or safetensors could not read."
    if isinstance(e, pickle.UnpicklingError) and 'GLOBAL' in str(e):
        detail = next(l.strip() for l in str(e).splitlines() if 'GLOBAL' in l)   # one line holds it: it has no break
        return CheckpointError(f"refused to load {str(path)!r}: it is a pickle that would import and run code "
                               f"({detail}). Checkpoints are read with weights_only=True; if you trust the file, "
                               f"load it yourself and re-save its state dict (torch.save(model.state_dict(), ...) "
                               f"or safetensors)")
    return CheckpointError(f"could not read checkpoint {str(path)!r}: corrupted, truncated or not a checkpoint "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})")


def state_dict_of(obj, where:str) -> dict:
    "A checkpoint's tensors, unwrapped as timm does (EMA weights first, then 'state_dict', 'model'; no DDP prefix)."
    if isinstance(obj, Mapping):
        key = next((k for k in ('state_dict_ema', 'model_ema', 'state_dict', 'model')
                    if isinstance(obj.get(k), Mapping)), None)
        if key: obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where} does not hold a state dict (a mapping of names to tensors), "
                              f"got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad: raise CheckpointError(f"{where} is not a state dict: entries {bad[:5]} are not str -> tensor")
    return clean_state_dict(obj)


def read_checkpoint(path) -> dict:
    "The state dict in a `.safetensors` file or a `.pth`/`.pt`/`.bin` file (read with `weights_only=True`)."
    path = Path(path).expanduser()
    if not path.is_file(): raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file
            obj = load_file(path)   # onto the CPU, its default (torch >= 2.9's own torch.load reads these files too)
        else: obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e: raise _checkpoint_error(path, e) from e
    sd = state_dict_of(obj, f"checkpoint file {str(path)!r}")
    # a NaN/inf weight makes every prediction NaN: refused here, naming the file, not found out as a NaN loss
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad: raise CheckpointError(f"checkpoint file {str(path)!r} holds NaN or infinite values in {len(bad)} tensor(s) "
                                  f"(e.g. {bad[0]!r}): it is damaged; delete it to download or make it again")
    return sd


# ---- where a pretrained cfg's weights are

def _hub_file(url:str) -> Path:
    "Where torch hub (so torchvision, fastai and timm) caches the file at `url`: $TORCH_HOME/hub/checkpoints/<name>."
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(urlparse(url).path)


HF_NAMES = ('model.safetensors', 'pytorch_model.bin')   # timm's weights files in a Hugging Face folder, in its order


def _hf_file(cfg, download:bool=False, cache_dir=None):
    "The cfg's file in the Hugging Face cache (None if not there), or downloaded there when `download`."
    import huggingface_hub
    repo, _, revision = cfg.hf_hub_id.partition('@')
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else HF_NAMES
    if download: return huggingface_hub.hf_hub_download(repo, names[0], revision=revision or None, cache_dir=cache_dir)
    found = (huggingface_hub.try_to_load_from_cache(repo, n, revision=revision or None, cache_dir=cache_dir)
             for n in names)
    return next((f for f in found if isinstance(f, str)), None)


def _folder_file(folder:Path) -> str:
    "The weights file in a folder written by timm's `save_for_hf` (a `local-dir:` source)."
    found = [folder / n for n in HF_NAMES if (folder / n).is_file()]
    if not found: raise CheckpointError(f"folder {str(folder)!r} holds none of the weights files {list(HF_NAMES)}")
    return str(found[0])


def _reachable(host:str, hf:bool, timeout:float=2.) -> bool:
    "Whether a connection to `host` opens within `timeout` seconds (Hugging Face's offline switch says no at once)."
    import socket
    if hf:
        import huggingface_hub
        if huggingface_hub.constants.HF_HUB_OFFLINE: return False
    try:
        with socket.create_connection((host, 443), timeout=timeout): return True
    except Exception: return False   # no name service, no route, refused, or a sandbox that forbids sockets


def _where_exactly(cfg) -> str:
    "Where a copied weights file must go for the loader to find it (the Hugging Face cache's layout, or torch hub's)."
    if not cfg.hf_hub_id: return repr(str(_hub_file(cfg.url)))
    import huggingface_hub
    repo = cfg.hf_hub_id.partition('@')[0]
    folder = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    return (f"{str(folder)!r} (the folder `hf download {repo}` fills on a machine with internet: "
            f"snapshots/<commit>/{cfg.hf_hub_filename or HF_NAMES[0]} and refs/main)")


def checkpoint_file(cfg, cache_dir=None) -> str:
    "A local file with the weights of pretrained cfg `cfg`: its `file`, a cached copy (no network), else a download."
    # a cached copy first: timm would ask the Hugging Face hub for a newer revision even when the file is cached
    if cfg.file: return _folder_file(Path(cfg.file)) if Path(cfg.file).is_dir() else str(cfg.file)
    if cfg.url and _hub_file(cfg.url).is_file(): return str(_hub_file(cfg.url))
    if cfg.hf_hub_id and _hf_file(cfg, cache_dir=cache_dir): return _hf_file(cfg, cache_dir=cache_dir)
    name = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    if not (cfg.hf_hub_id or cfg.url):
        raise CheckpointError(f"{name} has no pretrained weights: pass a file saved from this very architecture "
                              f"(weights='path/to/file.pth' or pretrained_cfg_overlay=dict(file=...))")
    where = f"the Hugging Face cache ($HF_HOME) as {cfg.hf_hub_id}" if cfg.hf_hub_id else repr(str(_hub_file(cfg.url)))
    host = 'huggingface.co' if cfg.hf_hub_id else urlparse(cfg.url).hostname
    if not _reachable(host, hf=bool(cfg.hf_hub_id)):   # at once, not after a minute of retries
        raise CheckpointError(f"the weights {name} are not on this machine and {host} cannot be reached to download "
                              f"them: copy the file from a machine with internet to {_where_exactly(cfg)}, or pass "
                              f"the file (weights='path/to/file.pth' or pretrained_cfg_overlay=dict(file=...))")
    try:
        if cfg.hf_hub_id: return _hf_file(cfg, download=True, cache_dir=cache_dir)
        dst = _hub_file(cfg.url)
        dst.parent.mkdir(parents=True, exist_ok=True)
        # torchvision's file names carry their hash: check it, as it does
        digest = torch.hub.HASH_REGEX.search(dst.name)
        torch.hub.download_url_to_file(cfg.url, str(dst), digest.group(1) if digest else None, progress=False)
        return str(dst)
    except Exception as e:
        raise CheckpointError(f"could not download the weights {name} from {cfg.hf_hub_id or cfg.url} "
                              f"({type(e).__name__}: {e}). On a machine with no internet, copy that file to {where}, "
                              f"or pass the file (weights='path/to/file.pth' or "
                              f"pretrained_cfg_overlay=dict(file=...))") from e


# ---- the mapping

def _projection_of(key:str):
    "The shortcut module a key belongs to ('stage2.1.shortcut'), or None."
    return key[:key.index('.shortcut.') + len('.shortcut')] if '.shortcut.' in key else None


def _twin_shapes(cfg, key_of=lambda k: k) -> dict:
    "Key (renamed by `key_of`) -> shape of a ResNetX config's fold-1 twin, the ResNet of its layout, built on `meta`."
    # (a window valid at the fold is valid at fold 1 and adds nothing there; `_fits` reads the stem and classifier)
    with torch.device('meta'): twin = ResNetX(cfg.replace(fold=1))
    return {key_of(k): v.shape for k, v in twin.state_dict().items()}


def _fits(k:str, shape, expected, num_features:int) -> bool:
    "Whether a tensor fits: the first conv may have other input channels (timm adapts them), the classifier other rows."
    if k == FIRST_CONV: return len(shape) == 4 and shape[0] == expected[0] and shape[2:] == expected[2:]
    if k == 'fc.weight': return len(shape) == 2 and shape[1] == num_features
    if k == 'fc.bias': return len(shape) == 1
    return shape == expected


def _problems(state_dict:dict, expected:dict, num_features:int, arch:str='') -> list:
    "Every way `state_dict` differs from `expected` (key -> shape): unexpected, missing and mismatched keys."
    problems = [f'unexpected key {k!r} {tuple(v.shape)}' for k, v in state_dict.items()
                if k not in expected and k not in CLASSIFIER]
    # old files lack BN counters
    problems += [f'missing key {k!r} {tuple(s)}' for k, s in expected.items()
                 if k not in state_dict and k not in CLASSIFIER and not _COUNTER.search(k)]
    return problems + [f'shape mismatch for {k!r}: {tuple(v.shape)} in the checkpoint, {tuple(expected[k])} in {arch}'
                       for k, v in state_dict.items()
                       if k in expected and not _fits(k, v.shape, expected[k], num_features)]


_KINDS = ('missing key', 'unexpected key', 'shape mismatch')

def _problem_list(problems, per_kind:int=10) -> str:
    "Problems grouped by kind (missing, unexpected, shape), at most `per_kind` of each, with counts in a header."
    groups = {kind: [m for m in problems if m.startswith(kind)] for kind in _KINDS}
    head = ', '.join(f"{len(ms)} {kind}{'es' if kind.endswith('ch') else 's'}" for kind, ms in groups.items() if ms)
    lines = [l for kind, ms in groups.items()
             for l in ms[:per_kind] + ([f'... and {len(ms) - per_kind} more'] if len(ms) > per_kind else [])]
    return f"({head}); nothing was loaded:\n  " + '\n  '.join(lines)


def _source_layout(state_dict:dict, model:nn.Module, source:str) -> tuple:
    "(key_of, expected): how the model's keys read `state_dict`, the shapes it holds; else an error naming each misfit."
    if any(k.startswith('stage') for k in state_dict):   # saved from a ResNetX
        key_of, arch, expected = (lambda k: k), 'this ResNetX', {k: v.shape for k, v in model.state_dict().items()}
        # not from this very architecture: from its fold-1 twin? (then loaded as a ResNet's weights are)
        if _problems(state_dict, expected, model.num_features):
            twin = _twin_shapes(model.cfg)
            if not _problems(state_dict, twin, model.num_features): expected = twin
    else:
        arch = resnet_counterpart(model.cfg)
        if arch is None:
            raise CheckpointError(f"{source} has ResNet keys, but this ResNetX (unit={model.cfg.unit!r}, num_units="
                                  f"{model.cfg.num_units}) has no ResNet counterpart: ResNet weights fit the layouts "
                                  f"of {list(_RESNETS)} only. Pass a file saved from this very architecture")
        key_of, expected = resnet_key, _twin_shapes(model.cfg, resnet_key)
    problems = _problems(state_dict, expected, model.num_features, arch)
    if problems: raise CheckpointError(f"{source} does not fit {arch} " + _problem_list(problems))
    return key_of, expected


def map_state_dict(state_dict:dict, model:nn.Module, source:str=None) -> dict:
    "timm's `pretrained_filter_fn`: a ResNet (or ResNetX) state dict for `model` at any fold, checked whole first."
    target, source = model.state_dict(), source or 'the checkpoint'
    key_of, expected = _source_layout(state_dict, model, source)
    # at fold > 1 a projection with no counterpart of its shape keeps its init, whole (conv and norm belong together);
    # a BatchNorm counter an old checkpoint lacks does not make a projection new
    fits = lambda k: key_of(k) in state_dict and state_dict[key_of(k)].shape == target[k].shape
    new = {_projection_of(k) for k in target if _projection_of(k) and not _COUNTER.search(k) and not fits(k)}
    out, report = {}, WeightsReport(source)
    for k, t in target.items():
        v = state_dict.get(key_of(k))
        if _projection_of(k) in new:
            out[k] = t
            report.new_keys.append(k)
        elif v is None: out[k] = t                      # a BatchNorm counter an old checkpoint lacks
        # timm drops a classifier of another size
        elif k in CLASSIFIER and v.shape != t.shape: report.skipped.append(k)
        else:
            out[k] = v
            report.loaded.append(k)
            if k == FIRST_CONV and v.shape != t.shape: report.adapted.append(k)   # timm adapts it to `in_chans`
    used = {key_of(k) for k in report.loaded}
    report.unused_keys = [k for k in state_dict if k not in used]
    model.pretrained_report, model.new_keys, model.unused_keys = report, report.new_keys, report.unused_keys
    if report.new_keys:
        projections = list(dict.fromkeys(_projection_of(k) for k in report.new_keys))
        warnings.warn(f"{len(report.new_keys)} tensors of {len(projections)} projections have no counterpart in "
                      f"{source} and keep their initialisation ({', '.join(projections)}); see `model.new_keys`",
                      stacklevel=_caller_level())
    return out


def _caller_level() -> int:
    "The `stacklevel` of the first frame outside this package and timm, so that a warning points at the user's line."
    frame, level = sys._getframe(1), 1
    # this package, and timm's loader
    here = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(timm.__file__))
    while frame is not None and frame.f_code.co_filename.startswith(here): frame, level = frame.f_back, level + 1
    return level
