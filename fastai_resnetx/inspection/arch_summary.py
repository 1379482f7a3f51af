"A model's direct children at a glance (`arch_summary`) and one child by its index path (`get_module`)."
import html
from dataclasses import dataclass, field

import torch.nn as nn
from fastcore.basics import patch, listify, store_attr
from fastai.learner import Learner

from .build import random_init_kwargs, build_by_name

__all__ = ['ArchRow', 'ArchSummary', 'build_model', 'get_module', 'n_layers', 'arch_summary']

# Column widths of the original arch_summary table; longer names widen the column rather than break the alignment.
_IDX_W, _NAME_W, _CLS_W, _N_W = 2, 10, 17, 3

def _describe(o):
    "A short, readable form of `o` for error messages."
    r = getattr(o, '__qualname__', None) or repr(o)
    return r if len(r) <= 80 else r[:77] + '...'

def build_model(arch_or_model):
    "The model itself: a module as is, a name (see `arch_from_name`) or an arch callable, built with random weights."
    if isinstance(arch_or_model, nn.Module): return arch_or_model
    if isinstance(arch_or_model, str): return build_by_name(arch_or_model, argname='arch_or_model')
    if not callable(arch_or_model):
        raise TypeError(f"arch_or_model={_describe(arch_or_model)} (a {type(arch_or_model).__name__}) is neither "
                        f"an nn.Module nor an arch callable; allowed: a model, an arch such as `resnet50`, "
                        f"or a model name")
    kwargs = random_init_kwargs(arch_or_model, lenient=True)
    try: model = arch_or_model(**kwargs)
    except Exception as e:
        raise TypeError(f"arch_or_model={_describe(arch_or_model)} could not be built with {kwargs or 'no arguments'} "
                        f"({type(e).__name__}: {e}); pass a model instance instead") from e
    if not isinstance(model, nn.Module):
        raise TypeError(f"arch_or_model={_describe(arch_or_model)} returned a {type(model).__name__}, not an nn.Module")
    return model

def _child(module, key, level):
    "Child `key` (an int position or a child's name) of `module`, with a clear error at index path `level`."
    names = [n for n,_ in module.named_children()]
    where = f"{type(module).__name__} at level {level}"
    if isinstance(key, str):
        if key not in names: raise IndexError(f"idx[{level}]={key!r}: {where} has no child named {key!r}; "
                                              f"its children are {names}")
        return module.get_submodule(key)
    if isinstance(key, bool) or not isinstance(key, int):
        raise TypeError(f"idx[{level}]={key!r} is a {type(key).__name__}; allowed: an int (or a child's name)")
    if not names: raise IndexError(f"idx[{level}]={key}: {where} has no children, nothing to index")
    if not -len(names) <= key < len(names):
        raise IndexError(f"idx[{level}]={key} is out of range for {where}: it has {len(names)} children, "
                         f"valid indices are 0..{len(names)-1} (or -{len(names)}..-1 from the end)")
    return module.get_submodule(names[key])

def get_module(arch_or_model, idx):
    "The child of `arch_or_model` at index path `idx` (an int or a list of ints, e.g. `[4, 0]`)."
    module = build_model(arch_or_model)
    for level,key in enumerate(listify(idx)): module = _child(module, key, level)
    return module

def n_layers(module):
    "What `arch_summary` counts: direct children of a `Sequential`/`ModuleList`, else leaf modules."
    if isinstance(module, (nn.Sequential, nn.ModuleList)): return len(module)
    return sum(1 for m in module.modules() if next(m.children(), None) is None)

@dataclass
class ArchRow:
    "One direct child in an `ArchSummary`."
    idx: int
    name: str
    cls: str
    n_layers: int
    children: list = field(default_factory=list)

def _is_named(names): return any(not n.isdigit() for n in names)

class ArchSummary:
    "The rows of `arch_summary`: aligned text in a terminal, a table in a notebook."
    def __init__(self, module, rows, named=False, verbose=False, idx=None): store_attr()

    def __len__(self): return len(self.rows)
    def __getitem__(self, i): return self.rows[i]
    def __iter__(self): return iter(self.rows)

    def _line(self, r, name_w, cls_w):
        name = f"{'(' + r.name + ')':<{name_w}} " if self.named else ''
        return f"[{r.idx:<{_IDX_W}}] {name}{r.cls:<{cls_w}}: {r.n_layers:<{_N_W}} layers"

    def __str__(self):
        name_w = max([_NAME_W] + [len(r.name) + 3 for r in self.rows])
        cls_w = max([_CLS_W] + [len(r.cls) for r in self.rows])
        lines = []
        for r in self.rows:
            lines.append(self._line(r, name_w, cls_w))
            if self.verbose: lines += [f"      {c}" for c in r.children]
        return '\n'.join(lines)
    __repr__ = __str__

    def _columns(self):
        return ['idx'] + (['name'] if self.named else []) + ['class', 'layers'] + (['children'] if self.verbose else [])

    def _cells(self, r):
        return [str(r.idx)] + ([r.name] if self.named else []) + [r.cls, str(r.n_layers)] + \
               ([', '.join(r.children)] if self.verbose else [])

    def _repr_markdown_(self):
        cols = self._columns()
        head = ['| ' + ' | '.join(cols) + ' |', '|' + '|'.join('---' for _ in cols) + '|']
        return '\n'.join(head + ['| ' + ' | '.join(self._cells(r)) + ' |' for r in self.rows])

    def _repr_html_(self):
        th = ''.join(f'<th>{c}</th>' for c in self._columns())
        trs = ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in self._cells(r)) + '</tr>'
                      for r in self.rows)
        return f'<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'

def arch_summary(arch_or_model, idx=None, verbose=False):
    "One row per direct child of `arch_or_model` (drilled into at `idx` first): class and number of layers."
    module = get_module(arch_or_model, idx)   # idx None: the model itself
    named_children = list(module.named_children())
    rows = [ArchRow(i, name, type(child).__name__, n_layers(child), [type(c).__name__ for c in child.children()])
            for i,(name,child) in enumerate(named_children)]
    return ArchSummary(module, rows, named=_is_named([n for n,_ in named_children]), verbose=verbose, idx=idx)

@patch
def arch_summary(self:Learner, idx=None, verbose=False):
    "`arch_summary` of the learner's model."
    return arch_summary(self.model, idx=idx, verbose=verbose)
