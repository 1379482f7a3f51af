"The named ResNetX archs: one entry point each (`resnetx50`), for direct calls, fastai's `model_meta` and timm's registry."
import inspect
from dataclasses import fields

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg

from .config import RESNETX_CONFIGS, ALIASES
from .resnetx import ResNetX

__all__ = ['create_resnetx', 'resnetx18', 'resnetx34', 'resnetx50', 'resnetx101', 'resnetx152', 'resnetx_mbconv',
           'resnetx_fused', 'ARCHS']


def _cfg(**kwargs):
    return dict(url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation='bilinear', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv='conv1', classifier='fc', license='apache-2.0', **kwargs)

# timm's registry reads the pretrained cfgs of this module's entry points from here
default_cfgs = {name: _cfg() for name in RESNETX_CONFIGS}


def _canonical(kwargs:dict) -> dict:
    "`kwargs` with fastai's spellings (`n_out`, `c_in`, `drop`) turned into timm's, the canonical names."
    out = {}
    for k, v in kwargs.items():
        name = ALIASES.get(k, k)
        if name in out: raise ValueError(f"`{k}` and `{name}` name the same setting: pass only `{name}`")
        out[name] = v
    return out


def _build(name:str, weights=None, **kwargs) -> ResNetX:
    model = ResNetX(RESNETX_CONFIGS[name], **kwargs)
    if weights is not None:
        from .weights import load_pretrained
        load_pretrained(model, weights)
    return model


def create_resnetx(name:str, pretrained:bool=False, weights=None, **kwargs) -> ResNetX:
    "Build the named ResNetX through timm's builder; `kwargs` are config fields and timm's (`features_only`, ...)."
    if name not in RESNETX_CONFIGS: raise ValueError(f"`name` must be one of {sorted(RESNETX_CONFIGS)}, got {name!r}")
    if not isinstance(pretrained, bool):
        raise ValueError(f"`pretrained` must be True or False, got {pretrained!r}; choose the weights with `weights=`")
    if pretrained and weights is None: weights = True
    # features_only wraps the model in timm's FeatureGetterNet, which calls `forward_intermediates`
    return build_model_with_cfg(_build, name, pretrained=False, feature_cfg=dict(feature_cls='getter'),
                                name=name, weights=weights, **_canonical(kwargs))


def _signed(fn):
    "Give entry point `fn` a readable signature: each config field a keyword, with this arch's value as its default."
    cfg, P = RESNETX_CONFIGS[fn.__name__], inspect.Parameter
    params = [P('pretrained', P.POSITIONAL_OR_KEYWORD, default=False), P('weights', P.KEYWORD_ONLY, default=None),
              *[P(f.name, P.KEYWORD_ONLY, default=getattr(cfg, f.name)) for f in fields(cfg)], P('kwargs', P.VAR_KEYWORD)]
    fn.__signature__ = inspect.Signature(params, return_annotation=ResNetX)
    return fn

@_signed
def resnetx18(pretrained=False, **kwargs):
    "ResNetX with resnet18's layout (2,2,2,2) of basic blocks."
    return create_resnetx('resnetx18', pretrained, **kwargs)

@_signed
def resnetx34(pretrained=False, **kwargs):
    "ResNetX with resnet34's layout (3,4,6,3) of basic blocks."
    return create_resnetx('resnetx34', pretrained, **kwargs)

@_signed
def resnetx50(pretrained=False, **kwargs):
    "ResNetX with resnet50's layout (3,4,6,3) of bottlenecks."
    return create_resnetx('resnetx50', pretrained, **kwargs)

@_signed
def resnetx101(pretrained=False, **kwargs):
    "ResNetX with resnet101's layout (3,4,23,3) of bottlenecks."
    return create_resnetx('resnetx101', pretrained, **kwargs)

@_signed
def resnetx152(pretrained=False, **kwargs):
    "ResNetX with resnet152's layout (3,8,36,3) of bottlenecks."
    return create_resnetx('resnetx152', pretrained, **kwargs)

@_signed
def resnetx_mbconv(pretrained=False, **kwargs):
    "ResNetX of MBConv units (depthwise conv, squeeze-excitation, SiLU), layout (2,3,4,2)."
    return create_resnetx('resnetx_mbconv', pretrained, **kwargs)

@_signed
def resnetx_fused(pretrained=False, **kwargs):
    "ResNetX of fused-MBConv units (EfficientNetV2), layout (2,3,4,2)."
    return create_resnetx('resnetx_fused', pretrained, **kwargs)


ARCHS = [resnetx18, resnetx34, resnetx50, resnetx101, resnetx152, resnetx_mbconv, resnetx_fused]
