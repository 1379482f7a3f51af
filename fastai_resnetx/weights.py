"Pretrained weights for ResNetX: the ResNet <-> ResNetX name mapping and the loaders."
import re

__all__ = ['resnet_key']

_PATTERNS = [
    (re.compile(r'^stem\.0\.(.+)$'), r'conv1.\1'),
    (re.compile(r'^stem\.1\.(.+)$'), r'bn1.\1'),
    (re.compile(r'^stage(\d+)\.(\d+)\.branch\.(\d+)\.0\.(.+)$'), lambda m: f'layer{m[1]}.{m[2]}.conv{int(m[3]) + 1}.{m[4]}'),
    (re.compile(r'^stage(\d+)\.(\d+)\.branch\.(\d+)\.1\.(.+)$'), lambda m: f'layer{m[1]}.{m[2]}.bn{int(m[3]) + 1}.{m[4]}'),
    (re.compile(r'^stage(\d+)\.(\d+)\.shortcut\.([01])\.(.+)$'), r'layer\1.\2.downsample.\3.\4'),
    (re.compile(r'^head\.fc\.(.+)$'), r'fc.\1'),
]


def resnet_key(resnetx_key:str):
    "The torchvision/timm ResNet state-dict key of a ResNetX (basic/bottleneck) key, or None if it has none."
    for pattern, repl in _PATTERNS:
        m = pattern.match(resnetx_key)
        if m: return repl(m) if callable(repl) else m.expand(repl)
    return None
