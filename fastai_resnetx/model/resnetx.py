"""ResNetX: stem layers -> stages of units wired by the fold plan -> pool and classifier. At `fold=1`, exactly a ResNet.

Its children read like a ResNet's (`conv1 bn1 act1 maxpool stage1 .. stageN global_pool fc`) and run in sequence:
`nn.Sequential(*list(model.children())[:-2])` computes `forward_features`, and a hook on a stage sees its feature map,
which is what fastai's `create_body`/`DynamicUnet` and timm's feature extractors assume. A folded skip may still reach
across stages: the earlier outputs a later stage reads travel with a stage's output tensor (attribute `CARRY`)."""
import contextvars, weakref

import torch
from torch import nn, Tensor
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from fastai.vision.models.xresnet import init_cnn
from timm.layers import DropPath, create_classifier, get_device_dtype
from timm.models._features import feature_take_indices   # where timm's own models take it from (not re-exported)

from .topology import FoldPlan, fold_plan
from .layers import projection, resnet_stem, deep_stem, small_stem, get_act, act_layer, STEM_STRIDE
from .blocks import get_block
from .config import ResNetXConfig
from ..checks import check_choice

__all__ = ['FoldUnit', 'Stage', 'CarryError', 'ResNetX', 'num_params', 'detach_carry']

CARRY = 'resnetx_carry'   # the attribute of a stage's output that holds the earlier outputs later stages read
# `Stage.__call__` hands the carry to its own `forward` through this, never as an argument: hooks that see keyword
# arguments and wrappers that rebuild them (accelerate's device hooks, pytree-mapping pre-hooks) neither see nor copy it
_HANDOVER = contextvars.ContextVar('resnetx_handover', default=None)


def detach_carry(t):
    "`t` without the earlier outputs a folded stage's output carries (an alias of the same values; `t` is unchanged)."
    # for what a user keeps past the forward pass: `torch.save`, a hook's stored outputs, a list of features. The stage
    # output itself keeps its carry, which the next stage reads.
    if not (isinstance(t, Tensor) and hasattr(t, CARRY)): return t
    alias = t.view_as(t)
    if hasattr(alias, CARRY): delattr(alias, CARRY)   # fastai's tensors copy it onto the alias
    return alias


class FoldUnit(nn.Module):
    "One ResNetX unit: `act(drop_path(branch(x)) + shortcut(skip))`, where `skip` is the output the fold plan chose."
    def __init__(self, branch:nn.Module, shortcut:nn.Module, act:nn.Module, drop_path:float=0.):
        super().__init__()
        self.branch, self.shortcut, self.act = branch, shortcut, act
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        # adding in place saves an allocation (as torchvision does), but is only safe on a fresh tensor: a custom
        # branch may return its input, an earlier output that later units still read as their skip
        self.add_inplace = bool(getattr(branch, 'fresh_output', False))

    def forward(self, x:Tensor, skip:Tensor) -> Tensor:
        out = self.drop_path(self.branch(x))
        if self.add_inplace: out += self.shortcut(skip)
        else: out = out + self.shortcut(skip)
        return self.act(out)


class CarryError(RuntimeError):
    "A stage of a folded ResNetX did not get the earlier outputs its skips read: it stops instead of computing else."


class _OwnerRef:
    "A weak reference to the tensor a carry belongs to; pickled or copied, it is dead (a saved output carries nothing)."
    __slots__ = ('ref',)
    def __init__(self, t=None): self.ref = None if t is None else weakref.ref(t)
    def __call__(self): return None if self.ref is None else self.ref()
    def __reduce__(self): return (_OwnerRef, ())   # hooks that keep outputs (DynamicUnet) get exported with the model


def _owner_ref(t):
    "A weak reference to the tensor a carry is attached to (None where there is none to take: an FX proxy)."
    try: return _OwnerRef(t)
    except TypeError: return None


def _carry_of(x):
    "The earlier outputs attached to `x` itself, or None where `x` holds a copy of another tensor's."
    # fastai's tensors copy the attribute onto every op's result (`x * 2`, a dropout): such a copy is not a stage output
    carry = getattr(x, CARRY, None)
    if isinstance(carry, tuple) and len(carry) == 5 and carry[4] is not None and carry[4]() is not x: return None
    return carry


_NO_SCRIPT = ("torch.jit.script cannot compile a ResNetX or its stages (their forward is plain Python over a "
              "precomputed plan, and TorchScript, deprecated since torch 2.14, cannot type it). What works: "
              "torch.jit.trace(model, example), torch.export.export(model, (example,)), torch.onnx.export, "
              "torch.compile")


class Stage(nn.ModuleList):
    """The units of stage `index`, run in order on the previous stage's output; folded skips read earlier outputs too.

    The earlier outputs that this stage or a later one reads ride on the stage's output tensor (attribute `CARRY`).
    Calling the stage hands them over outside the tensor, so a hook that returns a new tensor, a full backward hook or
    `torch.utils.checkpoint` around the stage keeps them: whatever the hooks return becomes the stage's output, and the
    earlier outputs go with it. Where they cannot arrive (a stage run alone, a module inserted between stages, the
    graph cut by reentrant checkpointing) the stage raises `CarryError` instead of computing something else."""
    def __init__(self, units, index:int, plan:FoldPlan, owner=None):
        super().__init__(units)
        lo = sum(plan.num_units[:index - 1])
        hi = lo + plan.num_units[index - 1]   # units lo+1..hi; input = output lo
        self.index, self.grad_checkpointing = index, False
        self._in, self._skip, self._out = plan.in_slots[lo:hi], plan.skip_slots[lo:hi], plan.out_slots[lo:hi]
        self._n_alive, self._fold = plan.n_alive, plan.fold
        # the model's own token (one object its stages share; a deepcopy or a reload gets a new one) makes another
        # model's earlier outputs, even of the same plan, a carry this stage refuses
        self._key = (plan.num_units, plan.fold, plan.start_id, plan.end_id, plan.stage_local, owner)
        # outputs from before this stage's input that this stage or a later one reads: they must come with the input
        self._needs = tuple(sorted({s for s in plan.sources[lo:] if s < lo}))
        # slots of the outputs up to this stage's last but one that later stages read: only those are passed on
        slot_of = (0,) + plan.out_slots   # slot_of[o]: the slot output o is written to
        self._keep = tuple(sorted({slot_of[s] for s in plan.sources[hi:] if s < hi}))

    def __prepare_scriptable__(self): raise RuntimeError(_NO_SCRIPT)   # also inside fastai's create_body

    def run(self, x:Tensor, slots=None):
        "Run the units on `x`; `slots` holds the earlier outputs (None: none needed). Returns the output and the slots."
        slots = [None] * self._n_alive if slots is None else list(slots)
        slots[self._in[0]] = x
        for unit, i, s, o in zip(self, self._in, self._skip, self._out):
            if self.grad_checkpointing and torch.is_grad_enabled():
                slots[o] = checkpoint(unit, slots[i], slots[s], use_reentrant=False)
            else: slots[o] = unit(slots[i], slots[s])
        return slots[self._out[-1]], slots

    def __call__(self, x):
        if not (self._needs or self._keep): return super().__call__(x)   # nothing to carry (fold 1)
        # read the carry before any hook can replace the input, and pass it on after every hook replaced the output
        box, carry = [], _carry_of(x)
        if torch.compiler.is_compiling():   # dynamo cannot trace ContextVar.set; a compiled graph has no such wrappers
            out = super().__call__(x, _carry=carry, _box=box)
        else:
            token = _HANDOVER.set((self, carry, box))
            try: out = super().__call__(x)
            finally: _HANDOVER.reset(token)
        # a tensor, or an FX proxy: FX tracing carries the earlier outputs at trace time the same way
        if box and isinstance(out, (Tensor, torch.fx.Proxy)): setattr(out, CARRY, (*box[-1], _owner_ref(out)))
        return out

    def _check(self, x, carry):
        "The earlier outputs on the input, or an error saying why they are missing."
        # a tuple test, not `is not None`: under torch.fx tracing a missing attribute reads as a Proxy, not None
        if not (isinstance(carry, tuple) and carry[0] == self._key and carry[1] == self.index - 1):
            raise CarryError(f"stage{self.index} of this ResNetX (fold={self._fold}) needs outputs "
                             f"{list(self._needs)} of earlier stages for its folded skips (or to pass them on); "
                             f"they travel with the output of stage{self.index - 1}, and this input does not carry "
                             f"them. Run the layers in order (the model, or nn.Sequential of its children, as "
                             f"fastai's create_body does), with no module in between; a stage alone on a bare tensor "
                             f"cannot compute its skips")
        if carry[3] and torch.is_grad_enabled() and x.requires_grad:
            raise CarryError(f"stage{self.index} of this ResNetX (fold={self._fold}) reads outputs "
                             f"{list(self._needs)} of earlier stages that were computed under no_grad, while its input "
                             f"needs gradients: those of the earlier outputs would be lost. Reentrant checkpointing "
                             f"does this (it runs a segment under no_grad): use torch.utils.checkpoint with "
                             f"use_reentrant=False, or `model.set_grad_checkpointing()`; to freeze the first stages "
                             f"use requires_grad_(False)")
        return carry[2]

    def forward(self, x:Tensor, _carry=None, _box=None) -> Tensor:
        "The stage on the previous stage's output `x` (the stem's for stage 1); `__call__` hands it earlier outputs."
        handed = None if torch.compiler.is_compiling() else _HANDOVER.get()
        if handed is not None and handed[0] is self: _carry, _box = handed[1:]
        slots = self._check(x, _carry) if self._needs else None
        if slots is not None and isinstance(x, Tensor):   # a model spread over devices (accelerate's device_map)
            slots = [t.to(x.device) if isinstance(t, Tensor) and t.device != x.device else t for t in slots]
        # compute on an alias without the incoming carry: carries never nest, and fastai's tensors, which copy their
        # attributes onto every result, leave none on this stage's outputs
        if isinstance(x, Tensor) and hasattr(x, CARRY):
            x = x.view_as(x)
            if hasattr(x, CARRY): delattr(x, CARRY)
        out, slots = self.run(x, slots)
        if self._keep:
            kept = tuple(t if j in self._keep else None for j, t in enumerate(slots))
            # computed under no_grad: a later stage whose input needs gradients must not read them (reentrant
            # checkpointing)
            no_grad = not torch.is_grad_enabled() or (bool(_carry[3]) if self._needs else False)
            # `__call__` attaches it to the stage's output after the hooks: whatever they return carries it
            if _box is not None: _box.append((self._key, self.index, kept, no_grad))
        return out


class _ModelToken:
    "One per model, shared by its stages: carries are accepted from stages of the same model only (compared by id)."
    def __repr__(self): return f'<model {id(self):#x}>'


def _output_shapes(cfg:ResNetXConfig):
    "Channels, reduction (total stride) and dilation of every output: 0 is the stem's, then one per unit."
    chans, reds, dils = [cfg.stem_width], [STEM_STRIDE[cfg.stem][1]], [1]
    for n, width, stride, dilation in zip(cfg.num_units, cfg.widths, *cfg.stage_strides()):
        for j in range(n):
            chans.append(width)
            reds.append(reds[-1] * (stride if j == 0 else 1))
            dils.append(dilation)
    return chans, reds, dils


class ResNetX(nn.Module):
    "A folded ResNet: unit `l` adds the output `plan.sources[l-1]` (projected when its shape differs) to its branch."
    def __init__(self, cfg:ResNetXConfig=None, **overrides):
        super().__init__()
        cfg = ResNetXConfig() if cfg is None else cfg
        if overrides: cfg = cfg.replace(**overrides)
        plan = cfg.plan()
        block, act = get_block(cfg.unit), get_act(cfg.act)
        stem = dict(resnet=resnet_stem, deep=deep_stem, small=small_stem)[cfg.stem]
        chans, reds, dils = _output_shapes(cfg)
        unit_kwargs, stages, l = {'act': act, **cfg.unit_kwargs}, [], 0
        for n in cfg.num_units:
            units = []
            for _ in range(n):
                l += 1
                src = plan.sources[l - 1]
                # a dilated unit (output_stride < 32) takes timm's keywords; others get none, so any block class fits
                dilated = dict(dilation=dils[l], first_dilation=dils[l - 1]) if dils[l] > 1 else {}
                branch = block(chans[l - 1], chans[l], reds[l] // reds[l - 1], **dilated, **unit_kwargs)
                shortcut = projection(chans[src], chans[l], reds[l] // reds[src], kind=cfg.shortcut)
                post = act_layer(act) if getattr(block, 'post_act', True) else nn.Identity()
                # stochastic depth grows linearly with depth, from 0 at the first unit (timm's ResNet rule)
                units.append(FoldUnit(branch, shortcut, post, cfg.drop_path_rate * (l - 1) / max(plan.n_units - 1, 1)))
            stages.append(units)
        self._assemble(cfg, stem(cfg.in_chans, cfg.stem_width, act=act), stages)
        self.reset_classifier(cfg.num_classes, cfg.global_pool)
        init_cnn(self)
        if cfg.zero_init_last_bn: self.zero_init_last_bn()

    def _assemble(self, cfg:ResNetXConfig, stem:dict, stages:list):
        "Add the stem layers and one `Stage` per list of units, wired by `cfg`'s fold plan: the one construction path."
        self._cfg = cfg
        self.plan: FoldPlan = cfg.plan()
        got = tuple(len(units) for units in stages)
        if got != cfg.num_units: raise ValueError(f"`stages` must hold {cfg.num_units} units per stage, got {got}")
        if list(stem) != ['conv1', 'bn1', 'act1', 'maxpool']:
            raise ValueError(f"`stem` must name its layers conv1, bn1, act1, maxpool, got {list(stem)}")
        for name, layer in stem.items(): self.add_module(name, layer)
        self.stage_names = []
        owner = _ModelToken()
        for s, units in enumerate(stages, start=1):
            self.add_module(f'stage{s}', Stage(units, s, self.plan, owner))
            self.stage_names.append(f'stage{s}')
        self.num_features, self.drop_rate = cfg.widths[-1], cfg.drop_rate
        first, red = STEM_STRIDE[cfg.stem]
        self.feature_info = [dict(num_chs=cfg.stem_width, reduction=first, module='act1')]
        for s, (width, stride) in enumerate(zip(cfg.widths, cfg.stage_strides()[0]), start=1):
            red *= stride
            self.feature_info.append(dict(num_chs=width, reduction=red, module=f'stage{s}'))

    @classmethod
    def from_parts(cls, cfg:ResNetXConfig, stem:dict, stages:list, global_pool:nn.Module, fc:nn.Module) -> 'ResNetX':
        "A ResNetX of given parts (stem layers, `FoldUnit`s per stage, pool, classifier), wired by `cfg`."
        # what `fold_resnet` uses: a foreign ResNet's own modules, moved (not copied), with no init run over them
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model._assemble(cfg, stem, stages)
        model.global_pool, model.fc = global_pool, fc
        model.num_classes, model.head_hidden_size = cfg.num_classes, model.num_features * global_pool.feat_mult()
        return model

    def __prepare_scriptable__(self): raise RuntimeError(_NO_SCRIPT)

    @property
    def cfg(self) -> ResNetXConfig:
        "The config of this model, with the input channels its first conv really takes (fastai's `n_in` adapts it)."
        in_chans = next(m for m in self.conv1.modules() if isinstance(m, nn.Conv2d)).in_channels
        return self._cfg if in_chans == self._cfg.in_chans else self._cfg.replace(in_chans=in_chans)

    @property
    def in_chans(self) -> int:
        "Input channels of the first conv (timm interface)."
        return self.cfg.in_chans

    @property
    def stages(self) -> list:
        "The stages, input to output."
        return [getattr(self, n) for n in self.stage_names]

    @property
    def units(self) -> list:
        "All units in order (unit `l` is `units[l-1]`)."
        return [u for stage in self.stages for u in stage]

    def zero_init_last_bn(self):
        "Zero the weight of each unit's last norm layer, so every unit starts as its skip."
        for unit in self.units:
            if hasattr(unit.branch, 'zero_init_last'): unit.branch.zero_init_last()

    def forward_stem(self, x:Tensor) -> Tensor:
        "The stem layers: `conv1`, `bn1`, `act1`, `maxpool`."
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    def forward_features(self, x:Tensor) -> Tensor:
        "Stem and all stages; returns the last feature map."
        x = self.forward_stem(x)
        for stage in self.stages: x = stage(x)   # called as modules, so that hooks on a stage see its output
        return x

    def forward_head(self, x:Tensor, pre_logits:bool=False) -> Tensor:
        "Pool, dropout and classifier on a feature map (`pre_logits=True` stops before the classifier)."
        x = self.global_pool(x)
        if self.drop_rate: x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x:Tensor) -> Tensor: return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x:Tensor, indices=None, norm:bool=False, stop_early:bool=False,
                              output_fmt:str='NCHW', intermediates_only:bool=False):
        "timm's feature API: the stem's (`act1`) and each stage's output; `indices`: int = last n, list = these."
        check_choice('output_fmt', output_fmt, ('NCHW',))
        take, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        x = self.act1(self.bn1(self.conv1(x)))   # ResNets have no final norm: `norm` changes nothing
        intermediates = [x] if 0 in take else []
        x = self.maxpool(x)
        for i, stage in enumerate(self.stages[:max_index] if stop_early else self.stages, start=1):
            x = stage(x)
            if i in take: intermediates.append(x)
        for t in intermediates:   # the stages are done with them: the caller's taps keep no earlier outputs alive
            if hasattr(t, CARRY): delattr(t, CARRY)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices=1, prune_norm:bool=False, prune_head:bool=True) -> list:
        "Drop the layers after the last of `indices` (and the classifier if `prune_head`); returns the kept indices."
        take, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        prune_end = max_index < len(self.stage_names)
        for name in self.stage_names[max_index:]: delattr(self, name)
        self.stage_names = self.stage_names[:max_index]
        if max_index == 0: self.maxpool = nn.Identity()   # it follows the stem's tap: the features now end there
        if prune_end:   # the classifier was sized for the last stage: it goes too
            self.num_features = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end: self.reset_classifier(0, '')
        return take

    def get_classifier(self) -> nn.Module:
        "The final linear layer (timm interface)."
        return self.fc

    def reset_classifier(self, num_classes:int, global_pool:str=None):
        "A new classifier for `num_classes` (0: none, features out) after `global_pool` (None: keep the current one)."
        pool = self._cfg.global_pool if global_pool is None else global_pool
        if global_pool is None and num_classes and not pool: pool = 'avg'   # a classifier needs pooling (after `''`)
        self._cfg = self._cfg.replace(num_classes=num_classes, global_pool=pool)   # checks both
        # on the device and dtype of the rest of the model, in its train/eval mode
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool,
                                                      **get_device_dtype(self))
        self.global_pool.train(self.training)
        self.fc.train(self.training)
        self.num_classes, self.head_hidden_size = num_classes, self.num_features * self.global_pool.feat_mult()

    def set_grad_checkpointing(self, enable:bool=True):
        "Recompute each unit's activations in the backward pass instead of storing them (same gradients, less memory)."
        for stage in self.stages: stage.grad_checkpointing = enable

    def group_matcher(self, coarse:bool=False) -> dict:
        "timm's parameter-group regexes: stem, then each stage (each unit unless `coarse`); the classifier comes last."
        return dict(stem=r'^conv1|^bn1|^maxpool', blocks=r'^stage(\d+)' if coarse else r'^stage(\d+)\.(\d+)')


def num_params(model:nn.Module, trainable_only:bool=False) -> int:
    "Number of parameters of `model` (only those with `requires_grad` if `trainable_only`)."
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
