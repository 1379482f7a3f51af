"ResNetX: stem -> units wired by the fold plan -> head. With `fold=1` it is exactly a ResNet."
from torch import nn, Tensor
from fastai.vision.models.xresnet import init_cnn

from .topology import FoldPlan, fold_plan
from .layers import projection, resnet_stem, deep_stem, classifier_head, get_act, act_layer
from .blocks import get_block
from .config import ResNetXConfig

__all__ = ['FoldUnit', 'Stage', 'ResNetX', 'RESNETX_CONFIGS', 'create_resnetx', 'resnetx18', 'resnetx34',
           'resnetx50', 'resnetx101', 'resnetx152', 'resnetx_mbconv', 'resnetx_fused', 'num_params']


class FoldUnit(nn.Module):
    "One ResNetX unit: `act(branch(x) + shortcut(skip))`, where `skip` is the output the fold plan chose."
    def __init__(self, branch:nn.Module, shortcut:nn.Module, act:nn.Module):
        super().__init__()
        self.branch, self.shortcut, self.act = branch, shortcut, act

    def forward(self, x:Tensor, skip:Tensor) -> Tensor:
        out = self.branch(x)
        out += self.shortcut(skip)   # in place, as torchvision: the branch ends in a norm layer, a fresh tensor
        return self.act(out)


class Stage(nn.ModuleList):
    "The units of one stage, in order. ResNetX wires them (skips may reach across units), so it has no forward."


def _output_shapes(cfg:ResNetXConfig):
    "Channels and reduction (total stride) of every output: 0 is the stem's, then one per unit."
    chans, reds = [cfg.stem_width], [4]
    for n, width, stride in zip(cfg.num_nodes, cfg.widths, cfg.strides):
        for j in range(n):
            chans.append(width); reds.append(reds[-1] * (stride if j == 0 else 1))
    return chans, reds


class ResNetX(nn.Module):
    "A folded ResNet: unit `l` adds the output `plan.sources[l-1]` (projected when its shape differs) to its branch."
    def __init__(self, cfg:ResNetXConfig=None, **overrides):
        super().__init__()
        cfg = ResNetXConfig() if cfg is None else cfg
        if overrides: cfg = cfg.replace(**overrides)
        self.cfg = cfg
        self.plan: FoldPlan = fold_plan(cfg.num_nodes, cfg.fold, cfg.start_id, cfg.end_id)
        block, act = get_block(cfg.unit), get_act(cfg.act)
        unit_kwargs = {'act': act, **cfg.unit_kwargs}
        stem = resnet_stem if cfg.stem == 'resnet' else deep_stem
        self.stem = stem(cfg.c_in, cfg.stem_width, act=act)
        chans, reds = _output_shapes(cfg)
        l = 0
        for s, n in enumerate(cfg.num_nodes, start=1):
            units = []
            for _ in range(n):
                l += 1
                src = self.plan.sources[l - 1]
                branch = block(chans[l - 1], chans[l], reds[l] // reds[l - 1], **unit_kwargs)
                shortcut = projection(chans[src], chans[l], reds[l] // reds[src], kind=cfg.shortcut)
                post = act_layer(act) if getattr(block, 'post_act', True) else nn.Identity()
                units.append(FoldUnit(branch, shortcut, post))
            self.add_module(f'stage{s}', Stage(units))
        self.num_features = chans[-1]
        self.head = classifier_head(self.num_features, cfg.n_out, cfg.drop)
        self.feature_info = [dict(num_chs=cfg.stem_width, reduction=4, module='stem')] + [
            dict(num_chs=w, reduction=reds[sum(cfg.num_nodes[:s])], module=f'stage{s}')
            for s, w in enumerate(cfg.widths, start=1)]
        # the forward only reads these precomputed slot indices: no topology arithmetic per call
        self._in, self._skip, self._out = list(self.plan.in_slots), list(self.plan.skip_slots), list(self.plan.out_slots)
        self._n_alive = self.plan.n_alive
        init_cnn(self)
        if cfg.zero_init_last_bn: self.zero_init_last_bn()

    @property
    def stages(self):
        "The stage containers, input to output."
        return [getattr(self, f'stage{s}') for s in range(1, len(self.cfg.num_nodes) + 1)]

    @property
    def units(self):
        "All units in order (unit `l` is `units[l-1]`)."
        return [u for stage in self.stages for u in stage]

    def zero_init_last_bn(self):
        "Zero the weight of each unit's last norm layer, so every unit starts as its skip."
        for unit in self.units:
            norms = [m for m in unit.branch.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
            if norms: nn.init.zeros_(norms[-1].weight)

    def forward_features(self, x:Tensor) -> Tensor:
        "Stem and all units; returns the last feature map."
        feats = [self.stem(x)] * self._n_alive
        i = 0
        for stage in self.stages:
            for unit in stage:
                feats[self._out[i]] = unit(feats[self._in[i]], feats[self._skip[i]])
                i += 1
        return feats[self._out[-1]]

    def forward_intermediates(self, x:Tensor, indices=None, norm:bool=False, stop_early:bool=False,
                              output_fmt:str='NCHW', intermediates_only:bool=False):
        "timm's feature API: the stem's and each stage's output (`indices`: 0 = stem, 1.. = stages; int = last n)."
        if output_fmt != 'NCHW': raise ValueError(f"`output_fmt` must be 'NCHW', got {output_fmt!r}")
        n = len(self.cfg.num_nodes) + 1
        take = list(range(n - indices, n)) if isinstance(indices, int) else list(range(n)) if indices is None else \
               [i % n for i in indices]
        feats = [self.stem(x)] * self._n_alive
        outs = [feats[0]] if 0 in take else []
        i = 0
        for s, stage in enumerate(self.stages, start=1):
            for unit in stage:
                feats[self._out[i]] = unit(feats[self._in[i]], feats[self._skip[i]])
                i += 1
            if s in take: outs.append(feats[self._out[i - 1]])
            if stop_early and s >= max(take): break
        if intermediates_only: return outs
        return feats[self._out[i - 1]], outs

    def forward_head(self, x:Tensor, pre_logits:bool=False) -> Tensor:
        "Pool and classify a feature map (`pre_logits=True` stops before the classifier)."
        if pre_logits and isinstance(self.head, nn.Sequential) and hasattr(self.head, 'fc'): return self.head[:-1](x)
        return self.head(x)

    def forward(self, x:Tensor) -> Tensor: return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        "The final linear layer (timm interface)."
        return self.head.fc

    def reset_classifier(self, num_classes:int, global_pool:str='avg'):
        "Replace the classifier with one for `num_classes` (0: no classifier, features out)."
        if global_pool != 'avg': raise ValueError(f"`global_pool` must be 'avg', got {global_pool!r}")
        self.head = classifier_head(self.num_features, max(num_classes, 1), self.cfg.drop)
        if num_classes == 0: self.head.fc = nn.Identity()

    def group_matcher(self, coarse:bool=False) -> dict:
        "timm's parameter-group regexes: stem, then each stage (each unit unless `coarse`), then the head."
        return dict(stem=r'^stem', blocks=r'^stage(\d+)' if coarse else r'^stage(\d+)\.(\d+)')


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
}


def create_resnetx(name:str, pretrained=False, fold:int=1, start_id:int=None, end_id:int=None, n_out:int=1000,
                   c_in:int=3, weights=None, **kwargs) -> ResNetX:
    "Build the named ResNetX with config overrides; `pretrained`/`weights` load weights (see `weights.py`)."
    if name not in RESNETX_CONFIGS:
        raise ValueError(f"`name` must be one of {sorted(RESNETX_CONFIGS)}, got {name!r}")
    cfg = RESNETX_CONFIGS[name].replace(fold=fold, start_id=start_id, end_id=end_id, n_out=n_out, c_in=c_in, **kwargs)
    if not isinstance(pretrained, bool):
        raise ValueError(f"`pretrained` must be True or False, got {pretrained!r}; choose the weights with `weights=`")
    model = ResNetX(cfg)
    if pretrained or weights is not None:
        from .weights import load_pretrained   # weights.py builds on this module
        load_pretrained(model, weights if weights is not None else True)
    return model


def resnetx18(pretrained=False, fold=1, start_id=None, end_id=None, n_out=1000, c_in=3, **kwargs):
    "ResNetX with resnet18's layout (2,2,2,2) of basic blocks."
    return create_resnetx('resnetx18', pretrained, fold, start_id, end_id, n_out, c_in, **kwargs)

def resnetx34(pretrained=False, fold=1, start_id=None, end_id=None, n_out=1000, c_in=3, **kwargs):
    "ResNetX with resnet34's layout (3,4,6,3) of basic blocks."
    return create_resnetx('resnetx34', pretrained, fold, start_id, end_id, n_out, c_in, **kwargs)

def resnetx50(pretrained=False, fold=1, start_id=None, end_id=None, n_out=1000, c_in=3, **kwargs):
    "ResNetX with resnet50's layout (3,4,6,3) of bottlenecks."
    return create_resnetx('resnetx50', pretrained, fold, start_id, end_id, n_out, c_in, **kwargs)

def resnetx101(pretrained=False, fold=1, start_id=None, end_id=None, n_out=1000, c_in=3, **kwargs):
    "ResNetX with resnet101's layout (3,4,23,3) of bottlenecks."
    return create_resnetx('resnetx101', pretrained, fold, start_id, end_id, n_out, c_in, **kwargs)

def resnetx152(pretrained=False, fold=1, start_id=None, end_id=None, n_out=1000, c_in=3, **kwargs):
    "ResNetX with resnet152's layout (3,8,36,3) of bottlenecks."
    return create_resnetx('resnetx152', pretrained, fold, start_id, end_id, n_out, c_in, **kwargs)

def resnetx_mbconv(pretrained=False, fold=1, start_id=None, end_id=None, n_out=1000, c_in=3, **kwargs):
    "ResNetX of MBConv units (depthwise conv, squeeze-excitation, SiLU), layout (2,3,4,2)."
    return create_resnetx('resnetx_mbconv', pretrained, fold, start_id, end_id, n_out, c_in, **kwargs)

def resnetx_fused(pretrained=False, fold=1, start_id=None, end_id=None, n_out=1000, c_in=3, **kwargs):
    "ResNetX of fused-MBConv units (EfficientNetV2), layout (2,3,4,2)."
    return create_resnetx('resnetx_fused', pretrained, fold, start_id, end_id, n_out, c_in, **kwargs)


def num_params(model:nn.Module, trainable_only:bool=False) -> int:
    "Number of parameters of `model` (only those with `requires_grad` if `trainable_only`)."
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
