"Layer groups for discriminative learning rates, derived from any model's structure: stem, stages, head."
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn
from fastcore.foundation import L
from fastai.vision.models.unet import DynamicUnet

from .arch_summary import _describe
from ..checks import check_int

__all__ = ['LayerGroup', 'arch_groups', 'arch_splitter', 'stage_splitter']

# How the model is cut into layer groups:
# 1. Stages are containers of repeated blocks: a `Sequential`/`ModuleList` whose children are blocks of one class
#    (what `arch_summary(..., verbose=True)` shows as `Sequential : 2 layers / ResBlock / ResBlock`), or a module
#    whose class says it is a stage. A model with no such container (mobilenet_v2's flat `features`) has its
#    most repeated block as the stages. A single stage (a transformer's blocks) counts each block as a stage.
# 2. Everything before the first stage is the stem; a module between two stages (a downsample) goes with the
#    stage after it; what follows the last stage goes with it, up to the head.
# 3. The head is `model[1]` for fastai's `Sequential(body, head)`; for fastai's `DynamicUnet` the encoder `model[0]` is
#    the body and the decoder (everything after it) is the last group; otherwise the head is what follows the last
#    stage from the first pooling layer on (or, with no pooling layer, the last module with parameters).

_POOL = re.compile(r'Pool(ing)?([123]d)?$')

def _is_leaf(m): return next(m.children(), None) is None

def _n_weighted(m):
    "How many layers in `m` hold a weight matrix or kernel (a conv or linear; a norm's weight is a vector)."
    return sum(any(p.dim() >= 2 for p in c.parameters()) for c in m.modules() if _is_leaf(c))

def _is_block(m):
    "A unit a stage can repeat: two or more conv/linear layers (one conv with its norm and activation is a layer)."
    return not _is_leaf(m) and _n_weighted(m) >= 2

def _is_stem(name):
    "A module named `stem` (timm's and torchvision's convention): never a stage, even as a chain of blocks (fastvit)."
    return name == 'stem' or name.endswith('.stem')

def _is_stage(m):
    "A container of repeated blocks, or a module that calls itself a stage."
    kids = list(m.children())
    if not kids or next(m.parameters(), None) is None: return False
    if 'Stage' in type(m).__name__: return True
    same_blocks = len({type(k) for k in kids}) == 1 and all(_is_block(k) for k in kids)
    return same_blocks and (isinstance(m, (nn.Sequential, nn.ModuleList)) or len(kids) >= 2)

def _join(prefix, name): return f'{prefix}.{name}' if prefix else name

def _stage_names(module, prefix='', root=True):
    "Qualified names of the outermost stages inside `module`."
    if not root and _is_stem(prefix): return []
    if not root and _is_stage(module): return [prefix]
    return sum((_stage_names(c, _join(prefix, n), False) for n,c in module.named_children()), [])

def _repeated_blocks(module):
    "No stage container: the blocks of the module repeating one block class most (3 times or more; the first on a tie)."
    best,best_n = [],2
    for name,m in module.named_modules():
        blocks = [(_join(name, n), c) for n,c in m.named_children() if _is_block(c)]
        if not blocks: continue
        cls,n = Counter(type(c) for _,c in blocks).most_common(1)[0]
        if n > best_n: best,best_n = [nm for nm,c in blocks if type(c) is cls],n
    return best

@dataclass
class _Part:
    "A module (or one direct parameter) in forward order, with its role."
    name: str
    module: object
    is_stage: bool = False
    @property
    def params(self): return [self.module] if isinstance(self.module, nn.Parameter) else list(self.module.parameters())

def _flatten(module, stages, prefix='', root=True):
    "`module` as a list of parts: stages and the modules around them, the root and each ancestor of a stage opened up."
    if not root and prefix in stages: return [_Part(prefix, module, True)]
    if not root and not any(s.startswith(prefix + '.') for s in stages): return [_Part(prefix, module)]
    parts = [_Part(_join(prefix, n), p) for n,p in module.named_parameters(recurse=False)]
    for n,c in module.named_children(): parts += _flatten(c, stages, _join(prefix, n), False)
    return parts

def _parts(module, prefix=''):
    "Parts of `module` in forward order; a single stage is opened up: each of its children is a stage."
    stages = _stage_names(module) or _repeated_blocks(module)
    if len(stages) == 1:
        kids = [_join(stages[0], n) for n,_ in module.get_submodule(stages[0]).named_children() if not _is_stem(n)]
        if len(kids) > 1: stages = kids
    return [_Part(_join(prefix, p.name), p.module, p.is_stage) for p in _flatten(module, set(stages))]

def _is_pool(m):
    "A pooling layer, or a module (a head) that starts with one."
    first_leaf = next(c for c in m.modules() if _is_leaf(c))   # `m` itself when it is a leaf
    return any(_POOL.search(type(o).__name__) for o in (m, first_leaf))

def _split_head(trailing):
    "Split what follows the last stage into (the rest of the body, the head)."
    with_params = [i for i,p in enumerate(trailing) if isinstance(p.module, nn.Module) and p.params]
    if not with_params: return trailing,[]
    pools = [i for i,p in enumerate(trailing) if isinstance(p.module, nn.Module) and _is_pool(p.module)]
    start = min(pools[:1] + with_params[-1:])   # the first pool, unless it comes after the last module with parameters
    return trailing[:start],trailing[start:]

@dataclass
class LayerGroup:
    "One layer group: the modules (or direct parameters) it holds and their parameters."
    names: list
    params: list = field(repr=False)
    role: str = ''
    @property
    def n_params(self): return sum(p.numel() for p in self.params)
    def __repr__(self):
        names = self.names if len(self.names) <= 4 else self.names[:2] + ['...'] + self.names[-1:]
        return f"LayerGroup({self.role}: {', '.join(names)}; {self.n_params:,} params)"

def _group(parts, role, seen):
    "A `LayerGroup` of `parts`, with each parameter not already `seen` (a tied weight goes to its first group)."
    params = []
    for p in (q for part in parts for q in part.params):
        if id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    return LayerGroup([p.name for p in parts], params, role)

def _encoder_decoder(model):
    "fastai's two-part models as (body, the modules after it, their role): `Sequential(body, head)` or a `DynamicUnet`."
    # a DynamicUnet's layers: the encoder, then BatchNorm, ReLU, middle conv, UnetBlocks, ... final conv
    if isinstance(model, DynamicUnet):
        return ('layers.0', model.layers[0]), [(f'layers.{i}', m) for i,m in enumerate(model.layers) if i], 'decoder'
    if isinstance(model, nn.Sequential) and len(model) == 2:
        (nb,body),(nh,head) = model.named_children()
        return (nb, body), [(nh, head)], 'head'
    return None, [], 'head'

def _structure(model):
    "(stem parts, a list of stage part-lists, head parts, the head's role) of `model`."
    body,after,head_role = _encoder_decoder(model)
    is_fastai = body is not None
    body = _parts(body[1], body[0]) if is_fastai else _parts(model)
    head = [_Part(n, m) for n,m in after]
    idx = [i for i,p in enumerate(body) if p.is_stage]
    if not idx:
        if not is_fastai: body,head = _split_head(body)
        return body,[],head,head_role
    stem,stages,pending = body[:idx[0]],[],[]
    for p in body[idx[0]:idx[-1]+1]:
        pending.append(p)
        if p.is_stage:
            stages.append(pending)
            pending = []
    trailing = body[idx[-1]+1:]
    if not is_fastai: trailing,head = _split_head(trailing)
    stages[-1] += trailing
    return stem,stages,head,head_role

def _chunks(stages, n):
    "`stages` cut into `n` contiguous runs (earlier runs longer when it does not divide evenly), as index ranges."
    sizes = [len(a) for a in np.array_split(np.arange(len(stages)), n)]
    bounds = np.cumsum([0] + sizes)
    return list(zip(bounds[:-1], bounds[1:]))

def _stage_role(a, b): return f'stage {a+1}' if b == a+1 else f'stages {a+1}-{b}'

def _too_many(model, n_groups, stages, has_head, head_role):
    "The error for a model that cannot give `n_groups` groups."
    found = f"a stem, {len(stages)} stages" if stages else "no stages"
    found += " (containers of repeated blocks)"
    found += f" and a {head_role}" if has_head else " and no head with parameters"
    most = len(stages) + 1 + has_head
    return ValueError(f"n_groups={n_groups} is more than {type(model).__name__} can be split into: found {found}, "
                      f"so at most {most} group{'s' if most > 1 else ''}")

def arch_groups(model, n_groups=3):
    "`n_groups` `LayerGroup`s of `model`, input to output (stem, stages, head or decoder); `None`: one per stage."
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={_describe(model)} (a {type(model).__name__}) is not an nn.Module; "
                        f"a splitter takes the built model (use `build_model(arch)` for an arch)")
    if n_groups is not None: check_int('n_groups', n_groups, 2, also='or None: one group per stage')
    stem,stages,head,head_role = _structure(model)
    has_head = any(p.params for p in head)
    if not has_head:   # a body without a classifier: what follows the last stage stays with it
        if stages: stages[-1] = stages[-1] + head
        else: stem = stem + head
    stem_has_params = any(p.params for p in stem)
    if n_groups is None: n_body = len(stages) + stem_has_params   # no stages: the body is one group whatever it is
    else: n_body = n_groups - has_head
    if n_body > len(stages) + 1:
        raise _too_many(model, n_groups, stages, has_head, head_role)
    if not stages: plan = [(stem, 'body')]
    elif n_body == len(stages) + 1: plan = [(stem, 'stem')] + [(s, _stage_role(i, i+1)) for i,s in enumerate(stages)]
    else: plan = [((stem if i == 0 else []) + sum(stages[a:b], []), ('stem + ' if i == 0 else '') + _stage_role(a, b))
                  for i,(a,b) in enumerate(_chunks(stages, n_body))]
    seen = set()
    groups = L(_group(parts, role, seen) for parts,role in plan + ([(head, head_role)] if has_head else []))
    if len(groups) < 2: raise _too_many(model, n_groups, stages, has_head, head_role)
    for i,g in enumerate(groups):
        if not g.params: raise ValueError(f"n_groups={n_groups}: group {i} ({g.role}: {', '.join(g.names)}) of "
                                          f"{type(model).__name__} has no parameters; ask for fewer groups")
    return groups

def arch_splitter(model, n_groups=3):
    "Parameter lists for fastai's `splitter=`: `n_groups` layer groups of any model, from input to output."
    return arch_groups(model, n_groups).map(lambda g: g.params)

def stage_splitter(model):
    "Finer `arch_splitter`: one group for the stem, one per stage and one for the head (layer-wise LR decay)."
    return arch_splitter(model, None)
