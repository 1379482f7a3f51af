"Exact FLOPs and MACs per module call, counted by `torch.utils.flop_counter.FlopCounterMode` on `meta` or real tensors."
from __future__ import annotations

import copy, numbers
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from fastcore.basics import store_attr
from fastcore.foundation import L

from .build import build_arch, build_on_meta
from ..checks import check_int

__all__ = ['CONVENTION', 'SummaryRow', 'ModelSummary', 'model_summary']

aten = torch.ops.aten

CONVENTION = ("FLOPs = 2 x MACs; MACs = multiply-adds of convolutions, linear layers, matmuls and attention, "
              "bias excluded (as torchvision's `_ops`); norms, activations, pooling and elementwise ops such as the "
              "residual add count 0; every call of a module is counted")

def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    "FLOPs of the CPU attention kernel, which `FlopCounterMode` leaves out (it counts 0 for it on CPU)"
    return sdpa_flop_count(query_shape, key_shape, value_shape)

# On CPU `F.scaled_dot_product_attention` runs this kernel, missing from torch's registry: without it attention would
# count 0 on CPU while `meta` (which decomposes to `bmm`) counts it.
_EXTRA_FORMULAS = {op: _sdpa_cpu_flop for op in [getattr(aten, '_scaled_dot_product_flash_attention_for_cpu', None)]
                   if op}

@dataclass(eq=False)
class SummaryRow:
    "One call of one module: shapes, parameters and FLOPs/MACs, inclusive of its children and its own (`self_`)"
    name: str                     # qualified name in the model ('' for the model itself)
    module_type: str
    depth: int                    # 0 for the model, 1 for its children, ...
    call: int                     # 0 for the first call of this module, 1 for the second, ...
    is_leaf: bool
    params: int                   # parameters of the module and its children
    input_shape: tuple|None = None
    output_shape: tuple|None = None
    flops: int = 0                # this call, children included
    self_flops: int = 0           # ops run in this module's own forward, outside any child module
    module: nn.Module|None = field(default=None, repr=False)
    @property
    def macs(self): return self.flops // 2
    @property
    def self_macs(self): return self.self_flops // 2
    @property
    def label(self): return ((f'{self.name} ({self.module_type})' if self.name else self.module_type)
                             + (f' #{self.call+1}' if self.call else ''))

def _human(n):
    "`n` with a K/M/G/T suffix and 3 decimals"
    for unit, scale in (('T', 10**12), ('G', 10**9), ('M', 10**6), ('K', 10**3)):
        if abs(n) >= scale: return f'{n/scale:.3f}{unit}'
    return str(n)

def _shape_str(s):
    "A shape as `1x3x224x224`, several as `[1x3, 1x4]`"
    if s is None: return ''
    if all(isinstance(d, int) for d in s): return 'x'.join(map(str, s))
    return '[' + ', '.join(map(_shape_str, s)) + ']'

def _shape_of(o):
    "The shape of tensor `o`, or the shapes of the tensors in a (nested) tuple, list or dict, one if there is only one"
    if isinstance(o, torch.Tensor): return tuple(o.shape)
    if isinstance(o, dict): o = list(o.values())
    if not isinstance(o, (tuple, list)): return None
    shapes = [s for s in map(_shape_of, o) if s is not None]
    return shapes[0] if len(shapes) == 1 else (tuple(shapes) or None)

_COLS = ('Module', 'Input', 'Output', 'Params', 'MACs', 'FLOPs', 'Self FLOPs')

class ModelSummary:
    "Result of `model_summary`: `rows` (a `SummaryRow` per module call), `total_flops`, `total_macs`; prints as a table"
    def __init__(self, model_name, rows, total_flops, total_params, trainable_params, input_size, device,
                 max_depth=None, fallback=None):
        store_attr()  # `fallback`: why `meta` could not count it, when `device` is another one
        self.rows = L(rows)

    @property
    def total_macs(self): return self.total_flops // 2

    def _cells(self, max_depth=None, indent='  '):
        "Table cells of the rows down to `max_depth`"
        depth = self.max_depth if max_depth is None else max_depth
        return [(indent*r.depth + r.label, _shape_str(r.input_shape), _shape_str(r.output_shape), f'{r.params:,}',
                 _human(r.macs), _human(r.flops), _human(r.self_flops))
                for r in self.rows if depth is None or r.depth <= depth]

    def _header(self):
        inp = ', '.join(map(_shape_str, self.input_size))
        why = f" (meta could not run it: {self.fallback})" if self.fallback else ''
        return (f'{self.model_name}: input {inp}, counted on {self.device}{why} by '
                'torch.utils.flop_counter.FlopCounterMode',
                CONVENTION + '.',
                'Module FLOPs/MACs include their children; the Self FLOPs column adds up to the total.')

    def _footer(self):
        return (f'Total params: {self.total_params:,} (trainable: {self.trainable_params:,})',
                f'Total MACs: {_human(self.total_macs)} ({self.total_macs:,})   '
                f'Total FLOPs: {_human(self.total_flops)} ({self.total_flops:,})')

    def table(self, max_depth=None):
        "The summary as aligned text, rows down to `max_depth` (0: the model only)"
        cells = self._cells(max_depth)
        widths = [max(len(c[i]) for c in [_COLS, *cells]) for i in range(len(_COLS))]
        def _line(c):
            return '  '.join(s.ljust(w) if i < 3 else s.rjust(w) for i,(s,w) in enumerate(zip(c, widths))).rstrip()
        bar = '=' * len(_line(_COLS))
        return '\n'.join([*self._header(), bar, _line(_COLS), bar, *map(_line, cells), bar, *self._footer()])

    def markdown(self, max_depth=None):
        "The summary as a Markdown table, rows down to `max_depth`"
        cells = self._cells(max_depth, indent='&emsp;')
        lines = ['|' + '|'.join(_COLS) + '|', '|' + '|'.join([':--']*3 + ['--:']*4) + '|']
        lines += ['|' + '|'.join(c.replace('|', r'\|') for c in row) + '|' for row in cells]
        return '\n\n'.join(['  \n'.join(self._header()), '\n'.join(lines), '  \n'.join(self._footer())])

    def to_df(self):
        "The rows as a pandas `DataFrame`"
        import pandas as pd
        return pd.DataFrame([dict(name=r.name, module_type=r.module_type, depth=r.depth, call=r.call, is_leaf=r.is_leaf,
                                  input_shape=r.input_shape, output_shape=r.output_shape, params=r.params, macs=r.macs,
                                  flops=r.flops, self_flops=r.self_flops) for r in self.rows])

    def __str__(self): return self.table()
    def __repr__(self): return self.table()
    def _repr_markdown_(self): return self.markdown()

def _params_per_module(model, names):
    "Number of parameters of each module of `model`, children included, each parameter counted once"
    modules = {name: m for m, name in names.items()}
    owned = {}  # module name -> {parameter id: numel}
    for pname, p in model.named_parameters():
        parts = pname.split('.')[:-1]
        for i in range(len(parts) + 1): owned.setdefault('.'.join(parts[:i]), {})[id(p)] = p.numel()
    return {m: sum(owned.get(name, {}).values()) for name, m in modules.items()}

class _CallRecorder:
    "Global forward hooks that record one `SummaryRow` per module call, with FLOPs read from `counter`"
    def __init__(self, model, counter):
        self.counter,self.rows,self.stack,self.calls,self.names = counter,[],[],{},{}
        for name, m in model.named_modules(): self.names.setdefault(m, name)
        self.params = _params_per_module(model, self.names)

    def _name(self, m):
        if m not in self.names:
            parent = self.stack[-1].name   # it runs inside a registered module's forward; '' is the model itself
            self.names[m] = (f'{parent}.' if parent else '') + f'<{type(m).__name__}>'
        return self.names[m]

    def _params(self, m):
        if m not in self.params: self.params[m] = sum(p.numel() for p in m.parameters())
        return self.params[m]

    def pre(self, m, args):
        call = self.calls[m] = self.calls.get(m, -1) + 1
        row = SummaryRow(self._name(m), type(m).__name__, len(self.stack), call, next(m.children(), None) is None,
                         self._params(m), _shape_of(args), module=m)
        row._start,row._children = self.counter.get_total_flops(),0
        self.stack.append(row)
        self.rows.append(row)

    def post(self, m, args, out):
        row = self.stack.pop()
        row.output_shape = _shape_of(out)
        row.flops = self.counter.get_total_flops() - row._start
        row.self_flops = row.flops - row._children
        if self.stack: self.stack[-1]._children += row.flops
        del row._start, row._children

    def __enter__(self):
        self.handles = [register_module_forward_pre_hook(self.pre), register_module_forward_hook(self.post)]
        return self

    def __exit__(self, *args):
        for h in self.handles: h.remove()

def _check_sizes(input_size):
    "`input_size` as a tuple of shapes, one per model input, or a `ValueError` saying what is allowed"
    def _is_shape(o):
        return (isinstance(o, (tuple, list, torch.Size)) and len(o) > 0
                and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in o))
    if _is_shape(input_size): return (tuple(int(d) for d in input_size),)
    if isinstance(input_size, (tuple, list)) and input_size and all(map(_is_shape, input_size)):
        return tuple(tuple(int(d) for d in s) for s in input_size)
    raise ValueError(f'input_size={input_size!r} is not a shape: pass a tuple of positive ints such as '
                     '(1, 3, 224, 224) (batch, channels, height, width), or a list of such tuples for a model with '
                     'several inputs')

def _check_device(device):
    "`device` as a `torch.device`, or a `ValueError` saying what is allowed"
    try: dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device={device!r} is not a torch device: use 'meta' (no memory, no compute), "
                         "'cpu' or 'cuda'") from e
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here; use 'meta' (same counts, no compute) "
                         "or 'cpu'")
    return dev


class _LeftAsFound:
    "On exit, each module of `model` has the attributes it had on entry: mode, params, buffers, hooks, plain attributes"
    # A forward may assign attributes (torchvision's AnchorGenerator caches `cell_anchors` on the input's device, so a
    # failed `meta` run would leave them on `meta`), register buffers or hooks, or switch modes; restoring each module's
    # attribute dict, and the contents of the dicts, lists and sets in it, undoes all of that, on success or failure.
    def __init__(self, model): self.model = model

    def __enter__(self):
        self.saved = [(m, dict(vars(m)),
                       {k: copy.copy(v) for k, v in vars(m).items() if isinstance(v, (dict, list, set))})
                      for m in self.model.modules()]
        return self

    def __exit__(self, *args):
        for m, attrs, contents in self.saved:
            d = vars(m)
            for k in [k for k in d if k not in attrs]: del d[k]
            d.update(attrs)
            for k, saved in contents.items():
                v = attrs[k]
                if isinstance(v, list): v[:] = saved
                else:
                    v.clear()
                    v.update(saved)

class _NormsOnMeta(TorchFunctionMode):
    "On `meta`, a norm's output is an empty tensor like its input: norms count 0 FLOPs either way"
    # Their meta kernels are Python decompositions: without this, the 201 batch norms
    # of a densenet201 take half its count.
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _NORMS and isinstance(args[0], torch.Tensor) and args[0].device.type == 'meta':
            return torch.empty_like(args[0])
        return func(*args, **(kwargs or {}))

_NORMS = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm}

def _model_of(model_or_arch, dev, **kwargs):
    "The model to count and, for an arch counted on `meta`, how to build it on CPU should `meta` not run it"
    if isinstance(model_or_arch, nn.Module):
        if kwargs: raise TypeError(f'model_summary got arch keyword arguments {list(kwargs)} with a model, not an arch')
        return model_or_arch, None
    if not (callable(model_or_arch) or isinstance(model_or_arch, str)):
        raise TypeError(f'model_or_arch={model_or_arch!r}: expected an nn.Module, a function that builds one, '
                        'or a model name')
    if dev.type != 'meta': return build_arch(model_or_arch, dev, **kwargs), None
    return build_on_meta(model_or_arch, **kwargs), lambda: build_arch(model_or_arch, 'cpu', **kwargs)

def _tensors(model): return [*model.parameters(), *model.buffers()]

def _first_float_dtype(model):
    "The dtype for the inputs: the model's first floating-point parameter or buffer's, else float32"
    return next((t.dtype for t in _tensors(model) if t.is_floating_point()), torch.float32)

def _state_on(model, dev):
    "Parameters and buffers of `model` to swap in for a forward on `dev`: the forward can't change the model's own"
    if dev.type == 'meta': return {k: torch.empty_like(t, device='meta') for k, t in _all_named(model).items()}
    buffers = dict(model.named_buffers())  # copied: a forward that updates a buffer in place updates the copy
    return {**{k: p.to(dev) for k, p in model.named_parameters()},
            **{k: b.to(dev, copy=True) for k, b in buffers.items()}}

def _all_named(model): return {**dict(model.named_parameters()), **dict(model.named_buffers())}

def _failure(model, sizes, recorder, err):
    "A `RuntimeError` that says which input size was tried and in which module the forward failed"
    inp = ', '.join(map(str, sizes))
    where = recorder.stack[-1] if recorder.stack else None
    msg = f'model_summary: {type(model).__name__} failed on input_size={inp}'
    if where is not None and where.depth > 0:
        msg += f" in module '{where.name}' ({where.module_type}) called with input {_shape_str(where.input_shape)}"
    elif where is not None: msg += f" in {where.module_type}'s own forward"
    msg += f': {type(err).__name__}: {err}'
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    if conv is not None and len(sizes) == 1:
        rank, size = len(conv.kernel_size) + 2, sizes[0]
        dims = {1: 'length', 2: 'height, width', 3: 'depth, height, width'}[rank - 2]
        if len(size) != rank:
            msg += (f'. Its first convolution ({type(conv).__name__}) takes {rank}-dim input '
                    f'(batch, channels, {dims}); input_size has {len(size)} dims')
        elif size[1] != conv.in_channels:
            msg += f'. Its first convolution takes {conv.in_channels} channels; input_size has {size[1]} at dim 1'
    return RuntimeError(msg)

def _count(model, inputs, dev, sizes):
    "Run `model` on `inputs` once under the counters on `dev`, leaving it as it was; return the recorded rows and total"
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    recorder = _CallRecorder(model, counter)
    with _LeftAsFound(model):
        state = _state_on(model, dev)
        model.eval()  # inference FLOPs; a train-mode forward would also move BatchNorm's running stats
        with torch.no_grad(), torch.device(dev), counter, recorder, \
             _NormsOnMeta() if dev.type == 'meta' else nullcontext():
            try: functional_call(model, state, tuple(inputs))
            except Exception as e: raise _failure(model, sizes, recorder, e) from e
    return recorder.rows, counter.get_total_flops()

def _meta_cannot_run(err) -> bool:
    "Whether `err` says `meta` can't run the model (no meta kernel, a value read back, a tensor on another device)"
    err = err.__cause__ or err
    return isinstance(err, NotImplementedError) or 'meta' in str(err)

def _inputs_on(inputs, sizes, dtype, dev):
    "The inputs on `dev`: empty on `meta`; elsewhere the given tensors, or a fixed random image in [0, 1) of each size"
    if inputs is not None:
        return [torch.empty(t.shape, dtype=t.dtype, device=dev) if dev.type == 'meta'
                else t.as_subclass(torch.Tensor).to(dev) for t in inputs]
    if dev.type == 'meta': return [torch.empty(s, dtype=dtype, device=dev) for s in sizes]
    g = torch.Generator().manual_seed(0)  # the same input every call, and the user's random state untouched
    return [torch.rand(s, generator=g, dtype=dtype).to(dev) for s in sizes]

def _real_device(model):
    "Where a model whose `meta` run failed can run: its parameters' device, CPU if none; None if they are on `meta`"
    devs = {t.device for t in _tensors(model)}
    if any(d.type == 'meta' for d in devs): return None
    return next(iter(devs), torch.device('cpu'))

def _one_line(err, n=160):
    s = f'{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}'
    return s if len(s) <= n else s[:n-3] + '...'

def model_summary(model_or_arch, input_size=(1, 3, 224, 224), device='meta', max_depth=None, inputs=None, fallback=True,
                  **kwargs):
    "Exact FLOPs/MACs, shapes and params of each module call of a model or arch (random weights) on `input_size`"
    # On `meta` by default; where `meta` can't run the model (data-dependent ops such as detection heads), and
    # `fallback`, it counts on the model's own device (CPU for an arch) with a real input, and the header says so.
    dev = _check_device(device)
    if inputs is None: sizes = _check_sizes(input_size)
    else:
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise TypeError(f'inputs: expected a tensor or a list of tensors, got {[type(t).__name__ for t in inputs]}')
        sizes = tuple(tuple(t.shape) for t in inputs)
    if max_depth is not None: check_int('max_depth', max_depth, 0, also='or None: all rows; 0: the model only')
    model, rebuild = _model_of(model_or_arch, dev, **kwargs)
    dtype, why = _first_float_dtype(model), None
    try: rows, total = _count(model, _inputs_on(inputs, sizes, dtype, dev), dev, sizes)
    except RuntimeError as e:
        if not (fallback and dev.type == 'meta' and _meta_cannot_run(e)): raise
        why = _one_line(e.__cause__ or e)
        if rebuild is not None: model = rebuild()
        dev = _real_device(model)
        if dev is None:
            raise RuntimeError(f"{e}. The model's weights are on 'meta', so it can't run elsewhere either: pass "
                               "its arch (model_summary builds it on CPU then) or the model on a real device") from e
        rows, total = _count(model, _inputs_on(inputs, sizes, dtype, dev), dev, sizes)
    params = {id(p): p for p in model.parameters()}.values()
    return ModelSummary(type(model).__name__, rows, total, sum(p.numel() for p in params),
                        sum(p.numel() for p in params if p.requires_grad), sizes, dev.type, max_depth, why)
