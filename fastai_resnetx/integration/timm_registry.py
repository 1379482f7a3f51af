"Every ResNetX arch in timm's registry: `timm.create_model('resnetx50', num_classes=10)`, `features_only=True`."
from functools import partial

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model

from ..model.resnetx import create_resnetx, RESNETX_CONFIGS

__all__ = []  # the timm entry points share our arch names: import this module, don't star-import it


def _cfg(**kwargs):
    return dict(url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation='bilinear', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv='stem.0', classifier='head.fc', license='apache-2.0', **kwargs)

default_cfgs = {name: _cfg() for name in RESNETX_CONFIGS}


def _from_timm_kwargs(name, num_classes=1000, in_chans=3, drop_rate=0., resnetx_pretrained=False,
                      resnetx_weights=None, **kwargs):
    "Translate timm's keyword names (num_classes, in_chans, drop_rate) into ours and build the model."
    model = create_resnetx(name, pretrained=resnetx_pretrained, weights=resnetx_weights,
                           n_out=max(num_classes, 1), c_in=in_chans, drop=drop_rate, **kwargs)
    if num_classes == 0: model.reset_classifier(0)
    return model


def _create(name, pretrained=False, weights=None, **kwargs):
    # weights come from our loader (torchvision/timm ResNet checkpoints), not from a timm url, so timm builds
    # with pretrained=False; features_only wraps the model in timm's FeatureGetterNet (forward_intermediates)
    return build_model_with_cfg(partial(_from_timm_kwargs, name), name, pretrained=False,
                                feature_cfg=dict(feature_cls='getter'), resnetx_pretrained=pretrained,
                                resnetx_weights=weights, **kwargs)


@register_model
def resnetx18(pretrained=False, **kwargs): return _create('resnetx18', pretrained, **kwargs)
@register_model
def resnetx34(pretrained=False, **kwargs): return _create('resnetx34', pretrained, **kwargs)
@register_model
def resnetx50(pretrained=False, **kwargs): return _create('resnetx50', pretrained, **kwargs)
@register_model
def resnetx101(pretrained=False, **kwargs): return _create('resnetx101', pretrained, **kwargs)
@register_model
def resnetx152(pretrained=False, **kwargs): return _create('resnetx152', pretrained, **kwargs)
@register_model
def resnetx_mbconv(pretrained=False, **kwargs): return _create('resnetx_mbconv', pretrained, **kwargs)
@register_model
def resnetx_fused(pretrained=False, **kwargs): return _create('resnetx_fused', pretrained, **kwargs)
