"Small layers the blocks and ResNetX are made of: conv-norm-act, residual add, shortcuts, stems, heads."
import inspect
from collections import OrderedDict
from functools import partial
from typing import Optional, Tuple

import torch
from torch import nn, Tensor
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation as _TVSqueezeExcitation

__all__ = ['act_layer', 'ConvNormAct', 'Conv1x1NormAct', 'Conv3x3NormAct', 'ResidualAdd', 'SqueezeExcitation',
           'projection', 'conv_norm_act', 'resnet_stem', 'deep_stem', 'small_stem', 'STEM_STRIDE', 'get_act']

_ACTS = {'relu': nn.ReLU, 'relu6': nn.ReLU6, 'silu': nn.SiLU, 'swish': nn.SiLU, 'gelu': nn.GELU,
         'mish': nn.Mish, 'hardswish': nn.Hardswish, 'leaky_relu': nn.LeakyReLU}


def get_act(act):
    "An activation class from a name ('relu', 'silu', ...), a class, or None for no activation."
    if act is None: return None
    if isinstance(act, str):
        if act.lower() in _ACTS: return _ACTS[act.lower()]
    elif callable(act): return act
    raise ValueError(f"`act` must be None, an nn.Module class or one of {sorted(_ACTS)}, got {act!r}")


def _takes_inplace(act) -> bool:
    try: return act is not None and 'inplace' in inspect.signature(act).parameters
    except (TypeError, ValueError): return False


def act_layer(act) -> nn.Module:
    "An activation module (in place where it can be, as torchvision's ResNet), or `nn.Identity` for None."
    act = get_act(act)
    if act is None: return nn.Identity()
    return act(inplace=True) if _takes_inplace(act) else act()


def _check_conv(ni, nf, ks, groups):
    if ks % 2 != 1: raise ValueError(f"`ks` must be an odd kernel size for same padding, got {ks}")
    if ni % groups or nf % groups: raise ValueError(f"`groups` ({groups}) must divide `ni` ({ni}) and `nf` ({nf})")


class ConvNormAct(Conv2dNormActivation):
    "Conv (same padding, no bias before a norm) -> norm -> activation, as torchvision's `Conv2dNormActivation`."
    def __init__(self, ni:int, nf:int, ks:int=3, stride:int=1, groups:int=1, norm=nn.BatchNorm2d, act=nn.ReLU,
                 **kwargs):
        _check_conv(ni, nf, ks, groups)
        act = get_act(act)
        super().__init__(ni, nf, kernel_size=ks, stride=stride, groups=groups, norm_layer=norm,
                         activation_layer=act, inplace=True if _takes_inplace(act) else None, **kwargs)

Conv1x1NormAct = partial(ConvNormAct, ks=1)
Conv3x3NormAct = partial(ConvNormAct, ks=3)


class ResidualAdd(nn.Module):
    "`act(block(x) + shortcut(x))`: a residual connection around `block`, with an optional shortcut and activation."
    def __init__(self, block:nn.Module, shortcut:nn.Module=None, act=None):
        super().__init__()
        self.block = block
        self.shortcut = nn.Identity() if shortcut is None else shortcut
        act = get_act(act)
        self.act = nn.Identity() if act is None else act()

    def forward(self, x:Tensor) -> Tensor: return self.act(self.block(x) + self.shortcut(x))


class SqueezeExcitation(_TVSqueezeExcitation):
    "Squeeze-excitation (torchvision's) on `nc` channels, squeezing to `max(1, int(squeeze_from * se_ratio))`."
    def __init__(self, nc:int, se_ratio:float=0.25, squeeze_from:int=None, act=nn.SiLU):
        squeeze = max(1, int((squeeze_from or nc) * se_ratio))
        super().__init__(nc, squeeze, activation=get_act(act))


@torch.jit.unused   # TorchScript (timm's FX-then-script test) takes the conv branch and never compiles this
def _gemm_helps(x:Tensor) -> bool:
    "Whether the matmul form runs: on CPU in eager mode, where it was measured (not compiled, traced or vmapped)."
    if x.device.type != 'cpu' or torch.compiler.is_compiling() or torch.jit.is_tracing(): return False
    functorch = getattr(getattr(torch._C, '_functorch', None), 'maybe_current_level', None)   # vmap, grad, jacrev
    return functorch is None or functorch() is None


def conv1x1_gemm(x:Tensor, weight:Tensor, bias:Optional[Tensor]=None, stride:Tuple[int, int]=(1, 1)) -> Tensor:
    "`F.conv2d(x, weight, bias, stride)` for a 1x1 `weight`; on CPU in eager mode a strided slice and one matmul."
    if torch.jit.is_scripting() or not _gemm_helps(x): return nn.functional.conv2d(x, weight, bias, stride)
    cl = x.is_contiguous(memory_format=torch.channels_last)
    if stride != (1, 1): x = x[:, :, ::stride[0], ::stride[1]]   # a 1x1 conv reads only these
    out = nn.functional.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)  # NHWC matmul
    # back to NCHW for an NCHW input: BatchNorm's CPU backward on the channels_last result was ~10x slower on 2x2 maps
    return out if cl else out.contiguous()


torch.fx.wrap('conv1x1_gemm')   # a leaf for FX (timm's feature extraction): the layout test is not traced into


class Conv1x1Gemm(nn.Conv2d):
    "`nn.Conv2d(ni, nf, 1, stride)` (same parameters, same function) run as a strided slice and one matmul."
    # Why: oneDNN's CPU conv backward is slow on small maps. resnet50's stage-4 projection (1024->2048,
    # stride 2, 4x4 in at 64 px, batch 16) took 36-48 ms forward+backward as a conv, 12.6 ms as this matmul (2-core
    # Xeon, fp32, 1 thread; bf16 channels_last 40 vs 21 ms); at 8x8 and 16x16 the matmul is as fast or faster. A fold-3
    # resnetx50 has 9 such projections where a ResNet has 3.
    def __init__(self, ni:int, nf:int, stride:int=1, bias:bool=False):
        super().__init__(ni, nf, 1, stride=stride, bias=bias)

    def forward(self, x:Tensor) -> Tensor: return conv1x1_gemm(x, self.weight, self.bias, self.stride)


def projection(ni:int, nf:int, stride:int=1, kind:str='conv', norm=nn.BatchNorm2d) -> nn.Module:
    "Shortcut that maps an `ni`-channel input to `nf` channels at `stride`; identity when nothing changes."
    if ni == nf and stride == 1: return nn.Identity()
    if kind == 'conv':  # torchvision's `downsample`: 1x1 conv with the stride, then norm
        return nn.Sequential(Conv1x1Gemm(ni, nf, stride=stride), norm(nf))
    if kind == 'avgpool':  # ResNet-D (timm's avg_down): average-pool away the stride, then 1x1 conv and norm
        pool = [nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False)] if stride > 1 else []
        return nn.Sequential(*pool, Conv1x1Gemm(ni, nf), norm(nf))
    raise ValueError(f"`kind` must be 'conv' or 'avgpool', got {kind!r}")


def conv_norm_act(names, ni:int, nf:int, ks:int=3, stride:int=1, groups:int=1, norm=nn.BatchNorm2d, act=nn.ReLU,
                  dilation:int=1) -> list:
    "Named `(name, layer)` pairs of a conv (same padding, no bias), its norm and activation (none if `act` is None)."
    _check_conv(ni, nf, ks, groups)
    conv, bn, act_name = names
    pad = dilation * (ks // 2)
    layers = [(conv, nn.Conv2d(ni, nf, ks, stride, padding=pad, dilation=dilation, groups=groups, bias=False)),
              (bn, norm(nf))]
    return layers + ([(act_name, act_layer(act))] if get_act(act) is not None else [])


def resnet_stem(c_in:int=3, nf:int=64, act=nn.ReLU, norm=nn.BatchNorm2d) -> OrderedDict:
    "torchvision's ResNet stem as named layers: `conv1` 7x7 stride 2, `bn1`, `act1`, `maxpool` 3x3 stride 2."
    return OrderedDict(conv1=nn.Conv2d(c_in, nf, 7, stride=2, padding=3, bias=False), bn1=norm(nf), act1=act_layer(act),
                       maxpool=nn.MaxPool2d(3, stride=2, padding=1))


def deep_stem(c_in:int=3, nf:int=64, act=nn.ReLU, norm=nn.BatchNorm2d) -> OrderedDict:
    "fastai xresnet's stem (three 3x3 conv-norm-acts, the first stride 2, then a 3x3 max-pool), named as `resnet_stem`."
    mid = max(nf // 2, 16)
    convs = nn.Sequential(ConvNormAct(c_in, mid, 3, 2, norm=norm, act=act),
                          ConvNormAct(mid, mid, 3, norm=norm, act=act), nn.Conv2d(mid, nf, 3, padding=1, bias=False))
    return OrderedDict(conv1=convs, bn1=norm(nf), act1=act_layer(act), maxpool=nn.MaxPool2d(3, stride=2, padding=1))


def small_stem(c_in:int=3, nf:int=64, act=nn.ReLU, norm=nn.BatchNorm2d) -> OrderedDict:
    "A stem for small images (CIFAR ResNets', fast.ai's course's): one 3x3 stride-1 conv, norm, act, no max-pool."
    return OrderedDict(conv1=nn.Conv2d(c_in, nf, 3, stride=1, padding=1, bias=False), bn1=norm(nf), act1=act_layer(act),
                       maxpool=nn.Identity())


# total stride of each stem: of its first conv's output (the `act1` feature) and after its max-pool
STEM_STRIDE = {'resnet': (2, 4), 'deep': (2, 4), 'small': (1, 1)}
