"Exact FLOPs and MACs per module call, counted by `torch.utils.flop_counter.FlopCounterMode`, on `meta` or real tensors."
from __future__ import annotations

import contextlib, numbers
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from fastcore.basics import store_attr
from fastcore.foundation import L

from .build import build_arch

__all__ = ['CONVENTION', 'SummaryRow', 'ModelSummary', 'model_summary']

aten = torch.ops.aten

CONVENTION = ("FLOPs = 2 x MACs; MACs = multiply-adds of convolutions, linear layers, matmuls and attention, bias excluded "
              "(as torchvision's `_ops`); norms, activations, pooling and elementwise ops such as the residual add count 0; "
              "every call of a module is counted")

def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    "FLOPs of the CPU attention kernel, which `FlopCounterMode` leaves out (it counts 0 for it on CPU)"
    return sdpa_flop_count(query_shape, key_shape, value_shape)

# On CPU `F.scaled_dot_product_attention` runs this kernel, missing from torch's registry: without it attention would
# count 0 on CPU while `meta` (which decomposes to `bmm`) counts it.
_EXTRA_FORMULAS = {op: _sdpa_cpu_flop for op in [getattr(aten, '_scaled_dot_product_flash_attention_for_cpu', None)] if op}

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
    def label(self): return (f'{self.name} ({self.module_type})' if self.name else self.module_type) + (f' #{self.call+1}' if self.call else '')

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
    "Result of `model_summary`: `rows` (one `SummaryRow` per module call), `total_flops`, `total_macs`; prints as a table"
    def __init__(self, model_name, rows, total_flops, total_params, trainable_params, input_size, device, max_depth=None):
        store_attr(but='rows')
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
        return (f'{self.model_name}: input {inp}, counted on {self.device} by torch.utils.flop_counter.FlopCounterMode',
                CONVENTION + '.', 'Module FLOPs/MACs include their children; the Self FLOPs column adds up to the total.')

    def _footer(self):
        return (f'Total params: {self.total_params:,} (trainable: {self.trainable_params:,})',
                f'Total MACs: {_human(self.total_macs)} ({self.total_macs:,})   Total FLOPs: {_human(self.total_flops)} ({self.total_flops:,})')

    def table(self, max_depth=None):
        "The summary as aligned text, rows down to `max_depth` (0: the model only)"
        cells = self._cells(max_depth)
        widths = [max(len(c[i]) for c in [_COLS, *cells]) for i in range(len(_COLS))]
        def _line(c): return '  '.join(s.ljust(w) if i < 3 else s.rjust(w) for i,(s,w) in enumerate(zip(c, widths))).rstrip()
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

class _ZeroFlopShortcut(TorchDispatchMode):
    "On `meta`, answer an op that counted 0 FLOPs before on the same input metadata with fresh outputs of the same metadata"
    # Running a model on `meta` is mostly Python shape logic: batchnorm's meta kernel is a whole decomposition, run again
    # for each of the 155 batchnorms of a resnet152. Above the counter, this skips an op only when the counter has seen the
    # same op on the same shapes count 0, so the counts are exactly the counter's; the FLOP-counting ops always reach it.
    def __init__(self, counter):
        super().__init__()
        self.counter,self.cache,self.functional = counter,{},{}

    def _is_functional(self, func):
        if func not in self.functional:
            s = getattr(func, '_schema', None)
            self.functional[func] = s is not None and not (s.is_mutable or any(a.alias_info for a in (*s.arguments, *s.returns)))
        return self.functional[func]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        key = _meta_key(func, args, kwargs) if self._is_functional(func) else None
        if key is None: return func(*args, **kwargs)
        if key in self.cache: return _from_meta(self.cache[key])
        before = self.counter.get_total_flops()
        out = func(*args, **kwargs)
        meta = _to_meta(out) if self.counter.get_total_flops() == before else None
        if meta is not None: self.cache[key] = meta
        return out

def _meta_key(func, args, kwargs):
    "A hashable key of `func` and the metadata of its arguments, None if an argument is not a meta tensor or plain value"
    def _k(o):
        if isinstance(o, torch.Tensor):
            if o.device.type != 'meta' or type(o).__torch_dispatch__ is not torch.Tensor.__torch_dispatch__: raise TypeError
            return ('T', tuple(o.shape), o.stride(), o.dtype, o.storage_offset(), o.requires_grad)
        if isinstance(o, (list, tuple)): return (type(o).__name__, *map(_k, o))
        if o is None or isinstance(o, (bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)):
            return (type(o).__name__, o)
        raise TypeError
    try: return (func, _k(args), tuple((k, _k(v)) for k,v in sorted(kwargs.items())))
    except TypeError: return None

def _to_meta(out):
    "The metadata of `out` (a meta tensor or a tuple of them) to rebuild it, None if it can't be cached"
    if isinstance(out, torch.Tensor):
        return ('T', tuple(out.shape), out.stride(), out.dtype) if type(out) is torch.Tensor and out.device.type == 'meta' else None
    if isinstance(out, (tuple, list)):
        metas = [_to_meta(o) for o in out]
        return None if any(m is None for m in metas) else (type(out), metas)
    return None

def _from_meta(meta):
    "Fresh meta tensors with the metadata `_to_meta` recorded"
    if meta[0] == 'T': return torch.empty_strided(meta[1], meta[2], dtype=meta[3], device='meta')
    return meta[0](_from_meta(m) for m in meta[1])

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
        if m not in self.names: self.names[m] = (self.stack[-1].name + '.' if self.stack else '') + f'<{type(m).__name__}>'
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
    raise ValueError(f'input_size={input_size!r} is not a shape: pass a tuple of positive ints such as (1, 3, 224, 224) '
                     '(batch, channels, height, width), or a list of such tuples for a model with several inputs')

def _check_device(device):
    "`device` as a `torch.device`, or a `ValueError` saying what is allowed"
    try: dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device={device!r} is not a torch device: use 'meta' (no memory, no compute), 'cpu' or 'cuda'") from e
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here; use 'meta' (same counts, no compute) or 'cpu'")
    return dev

def _model_of(model_or_arch, dev, **kwargs):
    "The model to count: `model_or_arch` itself, or built from it (directly on `meta` when counting there)"
    if isinstance(model_or_arch, nn.Module):
        if kwargs: raise TypeError(f'model_summary got arch keyword arguments {list(kwargs)} with a model, not an arch')
        return model_or_arch
    if not (callable(model_or_arch) or isinstance(model_or_arch, str)):
        raise TypeError(f'model_or_arch={model_or_arch!r}: expected an nn.Module, a function that builds one, or a model name')
    if dev.type == 'meta':
        try: return build_arch(model_or_arch, 'meta', **kwargs)
        except (NotImplementedError, RuntimeError): pass  # init code that needs real data: build on CPU, count on meta
    return build_arch(model_or_arch, **kwargs)

def _first_float_dtype(model):
    "The dtype for the inputs: the model's first floating-point parameter or buffer's, else float32"
    return next((t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), torch.float32)

def _state_on(model, dev):
    "Parameters and buffers of `model` to swap in for a forward on `dev` (empty if they are all there already)"
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    if all(t.device == dev for t in tensors.values()): return {}
    if dev.type == 'meta': return {k: torch.empty_like(t, device='meta') for k,t in tensors.items()}
    return {k: t.to(dev) for k,t in tensors.items()}

def _failure(model, sizes, recorder, err):
    "A `RuntimeError` that says which input size was tried and in which module the forward failed"
    inp = ', '.join(map(str, sizes)) if len(sizes) > 1 else str(sizes[0])
    where = recorder.stack[-1] if recorder.stack else None
    msg = f'model_summary: {type(model).__name__} failed on input_size={inp}'
    if where is not None and where.depth > 0:
        msg += f" in module '{where.name}' ({where.module_type}) called with input {_shape_str(where.input_shape)}"
    elif where is not None: msg += f" in {where.module_type}'s own forward"
    msg += f': {type(err).__name__}: {err}'
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if conv is not None and len(sizes) == 1:
        rank, size = len(conv.kernel_size) + 2, sizes[0]
        dims = {1: 'length', 2: 'height, width', 3: 'depth, height, width'}.get(rank - 2, '...')
        if len(size) != rank:
            msg += (f'. Its first convolution ({type(conv).__name__}) takes {rank}-dim input (batch, channels, {dims}); '
                    f'input_size has {len(size)} dims')
        elif size[1] != conv.in_channels:
            msg += f'. Its first convolution takes {conv.in_channels} channels; input_size has {size[1]} at dim 1'
    if isinstance(err, NotImplementedError) or 'meta' in str(err): msg += ". If the model can't run on 'meta', try device='cpu'"
    return RuntimeError(msg)

def _count(model, inputs, dev, sizes):
    "Run `model` on `inputs` once under the counters, on `dev`, leaving it as it was; return the recorded rows and total"
    state = _state_on(model, dev)
    modes = {m: m.training for m in model.modules()}
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    recorder = _CallRecorder(model, counter)
    try:
        model.eval()  # inference FLOPs; a train-mode forward would also move BatchNorm's running stats
        with torch.no_grad(), torch.device(dev), counter, _shortcut(dev, counter), recorder:
            try: functional_call(model, state, tuple(inputs)) if state else model(*inputs)
            except Exception as e: raise _failure(model, sizes, recorder, e) from e
    finally:
        for m, training in modes.items(): m.training = training
    return recorder.rows, counter.get_total_flops()

def _shortcut(dev, counter):
    "The zero-FLOP shortcut on `meta`, nothing elsewhere"
    return _ZeroFlopShortcut(counter) if dev.type == 'meta' else contextlib.nullcontext()

def model_summary(model_or_arch, input_size=(1, 3, 224, 224), device='meta', max_depth=None, inputs=None, **kwargs):
    "Exact FLOPs/MACs, shapes and params of every module call of a model or arch (built with random weights) on `input_size`"
    dev = _check_device(device)
    sizes = _check_sizes(input_size) if inputs is None else None
    if max_depth is not None and not (isinstance(max_depth, numbers.Integral) and max_depth >= 0):
        raise ValueError(f'max_depth={max_depth!r}: expected None (all rows) or an int >= 0 (0: the model only)')
    model = _model_of(model_or_arch, dev, **kwargs)
    if inputs is None: inputs = [torch.zeros(s, dtype=_first_float_dtype(model), device=dev) for s in sizes]
    else:
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise TypeError(f'inputs: expected a tensor or a list of tensors, got {[type(t).__name__ for t in inputs]}')
        inputs = [torch.empty(t.shape, dtype=t.dtype, device=dev) if dev.type == 'meta' else t.as_subclass(torch.Tensor).to(dev)
                  for t in inputs]
        sizes = tuple(tuple(t.shape) for t in inputs)
    rows, total = _count(model, inputs, dev, sizes)
    params = {id(p): p for p in model.parameters()}.values()
    return ModelSummary(type(model).__name__, rows, total, sum(p.numel() for p in params),
                        sum(p.numel() for p in params if p.requires_grad), sizes, dev.type, max_depth)
