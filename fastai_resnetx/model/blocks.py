"""CNN building blocks, all with the constructor shape `(ni, nf, stride=1, **kwargs)` and named layers.

Each block is the *residual branch* F(x): on its own it maps `(N, ni, H, W)` to `(N, nf, H/stride, W/stride)`;
as a ResNetX unit, ResNetX adds the skip and applies `post_act` after the add. Layers are named as torchvision's
and timm's (`conv1`, `bn1`, `act1`, ..., `conv_dw`, `se`, `conv_pwl`), so checkpoints map by name.
`residual_block` wraps any of them into a stand-alone residual block with the right shortcut; `AvgPoolResBlock` is a
ResNet-D block with an average-pool shortcut (not named `ResBlock`, which stays fastai's after the star import)."""
from collections import OrderedDict

from torch import nn

from .layers import ResidualAdd, SqueezeExcitation, projection, conv_norm_act as cna

__all__ = ['Block', 'BasicBlock', 'Bottleneck', 'LinearBottleneck', 'InvertedResidual', 'DepthwiseSeparableConv',
           'MBConv', 'FusedMBConv', 'AvgPoolResBlock', 'residual_block', 'BLOCKS', 'get_block']


class Block(nn.Sequential):
    "A branch made of named layers run in order; its last layer is a norm, so its output is a fresh tensor."
    post_act = True       # ResNetX applies the activation after the residual add
    fresh_output = True   # the output is never the input (ResNetX may then add the skip in place)
    def __init__(self, *layers):
        layers = [l for l in layers if l[1] is not None]
        super().__init__(OrderedDict(layers))
        self.last_norm = [n for n, m in layers if n.startswith('bn')][-1]

    def zero_init_last(self):
        "Zero the weight of the last norm layer, so that the block starts as its skip (fastai/timm option)."
        nn.init.zeros_(getattr(self, self.last_norm).weight)


class BasicBlock(Block):
    "ResNet-18/34 branch: 3x3 conv-norm-act (with the stride), 3x3 conv-norm. ReLU follows the add."
    def __init__(self, ni:int, nf:int, stride:int=1, ks:int=3, act=nn.ReLU, norm=nn.BatchNorm2d, dilation:int=1,
                 first_dilation:int=None):
        super().__init__(*cna(('conv1', 'bn1', 'act1'), ni, nf, ks, stride, norm=norm, act=act,
                              dilation=first_dilation or dilation),
                         *cna(('conv2', 'bn2', None), nf, nf, ks, norm=norm, act=None, dilation=dilation))


class Bottleneck(Block):
    "ResNet-50+ branch (v1.5, stride on the 3x3): 1x1 reduce, 3x3, 1x1 expand to `nf`. ReLU follows the add."
    def __init__(self, ni:int, nf:int, stride:int=1, reduction:int=4, groups:int=1, ks:int=3,
                 act=nn.ReLU, norm=nn.BatchNorm2d, dilation:int=1, first_dilation:int=None):
        mid = nf // reduction
        if mid < 1: raise ValueError(f"`reduction` ({reduction}) must be <= `nf` ({nf})")
        super().__init__(*cna(('conv1', 'bn1', 'act1'), ni, mid, 1, norm=norm, act=act),
                         *cna(('conv2', 'bn2', 'act2'), mid, mid, ks, stride, groups, norm=norm, act=act,
                              dilation=first_dilation or dilation),
                         *cna(('conv3', 'bn3', None), mid, nf, 1, norm=norm, act=None))


class LinearBottleneck(Bottleneck):
    "A bottleneck with no activation after the add (MobileNetV2's linear bottleneck)."
    post_act = False


class InvertedResidual(Block):
    "Narrow -> wide -> narrow: 1x1 expand by `expansion`, dense 3x3 (with the stride), 1x1 linear projection."
    post_act = False
    def __init__(self, ni:int, nf:int, stride:int=1, expansion:int=4, ks:int=3, act=nn.ReLU, norm=nn.BatchNorm2d,
                 dilation:int=1, first_dilation:int=None):
        mid = ni * expansion
        super().__init__(*cna(('conv_pw', 'bn1', 'act1'), ni, mid, 1, norm=norm, act=act),
                         *cna(('conv2', 'bn2', 'act2'), mid, mid, ks, stride, norm=norm, act=act,
                              dilation=first_dilation or dilation),
                         *cna(('conv_pwl', 'bn3', None), mid, nf, 1, norm=norm, act=None))


class DepthwiseSeparableConv(Block):
    "Depthwise `ks`x`ks` conv-norm-act (one filter per channel, with the stride), then pointwise 1x1 conv-norm."
    def __init__(self, ni:int, nf:int, stride:int=1, ks:int=3, act=nn.ReLU, norm=nn.BatchNorm2d, pw_act=None,
                 dilation:int=1, first_dilation:int=None):
        super().__init__(*cna(('conv_dw', 'bn1', 'act1'), ni, ni, ks, stride, groups=ni, norm=norm, act=act,
                              dilation=first_dilation or dilation),
                         *cna(('conv_pw', 'bn2', 'act2'), ni, nf, 1, norm=norm, act=pw_act))


class MBConv(Block):
    "EfficientNet's MBConv: 1x1 expand, depthwise `ks`x`ks` (with the stride), SE, 1x1 linear projection."
    post_act = False
    def __init__(self, ni:int, nf:int, stride:int=1, expansion:int=4, ks:int=3, se_ratio:float=0.25,
                 act=nn.SiLU, norm=nn.BatchNorm2d, dilation:int=1, first_dilation:int=None):
        mid = ni * expansion
        expand = cna(('conv_pw', 'bn1', 'act1'), ni, mid, 1, norm=norm, act=act) if expansion != 1 else []
        se = SqueezeExcitation(mid, se_ratio, squeeze_from=ni, act=act) if se_ratio else None
        dw = cna(('conv_dw', 'bn2', 'act2'), mid, mid, ks, stride, groups=mid, norm=norm, act=act,
                 dilation=first_dilation or dilation)
        super().__init__(*expand, *dw, ('se', se), *cna(('conv_pwl', 'bn3', None), mid, nf, 1, norm=norm, act=None))


class FusedMBConv(Block):
    "EfficientNetV2's fused MBConv: one dense `ks`x`ks` expand (with the stride), optional SE, 1x1 linear projection."
    post_act = False
    def __init__(self, ni:int, nf:int, stride:int=1, expansion:int=4, ks:int=3, se_ratio:float=0.,
                 act=nn.SiLU, norm=nn.BatchNorm2d, dilation:int=1, first_dilation:int=None):
        mid = ni * expansion
        se = SqueezeExcitation(mid, se_ratio, squeeze_from=ni, act=act) if se_ratio else None
        super().__init__(*cna(('conv_exp', 'bn1', 'act1'), ni, mid, ks, stride, norm=norm, act=act,
                              dilation=first_dilation or dilation), ('se', se),
                         *cna(('conv_pwl', 'bn2', None), mid, nf, 1, norm=norm, act=None))


class AvgPoolResBlock(ResidualAdd):
    "A ResNet-D residual block: two 3x3 convs (stride on the second), avg-pool + 1x1 shortcut, act after the add."
    def __init__(self, ni:int, nf:int, stride:int=1, ks:int=3, act=nn.ReLU, norm=nn.BatchNorm2d):
        convs = Block(*cna(('conv1', 'bn1', 'act1'), ni, nf, ks, 1, norm=norm, act=act),
                      *cna(('conv2', 'bn2', None), nf, nf, ks, stride, norm=norm, act=None))
        super().__init__(convs, projection(ni, nf, stride, kind='avgpool', norm=norm), act=act)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck, 'linear_bottleneck': LinearBottleneck,
          'inverted_residual': InvertedResidual, 'dwsep': DepthwiseSeparableConv,
          'mbconv': MBConv, 'fused_mbconv': FusedMBConv}


def get_block(block):
    "A block class from its name in `BLOCKS` or the class itself."
    if isinstance(block, str) and block in BLOCKS: return BLOCKS[block]
    if isinstance(block, type) and issubclass(block, nn.Module): return block
    raise ValueError(f"`unit` must be one of {sorted(BLOCKS)} or an nn.Module class, got {block!r}")


def residual_block(block, ni:int, nf:int, stride:int=1, shortcut:str='conv', **kwargs) -> ResidualAdd:
    "A stand-alone residual block: `block`'s branch, a projection shortcut when the shape changes, its `post_act`."
    block = get_block(block)
    act = kwargs.get('act', nn.ReLU) if getattr(block, 'post_act', True) else None
    return ResidualAdd(block(ni, nf, stride, **kwargs), projection(ni, nf, stride, kind=shortcut), act=act)
