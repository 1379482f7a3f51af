"arch_summary and get_module: the documented outputs to the character, rows as data, and clear errors."
import re
import pytest, torch
from torch import nn
from fastai.vision.all import xresnet18, Learner, DataLoaders, CrossEntropyLossFlat
from torchvision.models import MNASNet, wide_resnet50_2
from fastai_resnetx.inspection.arch_summary import arch_summary, get_module, n_layers, ArchSummary
from fastai_resnetx import resnetx18

XRESNET18 = """\
[0 ] ConvLayer        : 3   layers
[1 ] ConvLayer        : 3   layers
[2 ] ConvLayer        : 3   layers
[3 ] MaxPool2d        : 1   layers
[4 ] Sequential       : 2   layers
[5 ] Sequential       : 2   layers
[6 ] Sequential       : 2   layers
[7 ] Sequential       : 2   layers
[8 ] AdaptiveAvgPool2d: 1   layers
[9 ] Flatten          : 1   layers
[10] Dropout          : 1   layers
[11] Linear           : 1   layers"""

_CONV = "      Conv2d\n      BatchNorm2d\n      ReLU"
_RES = "      ResBlock\n      ResBlock"
XRESNET18_VERBOSE = f"""\
[0 ] ConvLayer        : 3   layers
{_CONV}
[1 ] ConvLayer        : 3   layers
{_CONV}
[2 ] ConvLayer        : 3   layers
{_CONV}
[3 ] MaxPool2d        : 1   layers
[4 ] Sequential       : 2   layers
{_RES}
[5 ] Sequential       : 2   layers
{_RES}
[6 ] Sequential       : 2   layers
{_RES}
[7 ] Sequential       : 2   layers
{_RES}
[8 ] AdaptiveAvgPool2d: 1   layers
[9 ] Flatten          : 1   layers
[10] Dropout          : 1   layers
[11] Linear           : 1   layers"""

MNASNET_0 = """\
[0 ] Conv2d           : 1   layers
[1 ] BatchNorm2d      : 1   layers
[2 ] ReLU             : 1   layers
[3 ] Conv2d           : 1   layers
[4 ] BatchNorm2d      : 1   layers
[5 ] ReLU             : 1   layers
[6 ] Conv2d           : 1   layers
[7 ] BatchNorm2d      : 1   layers
[8 ] Sequential       : 3   layers
[9 ] Sequential       : 3   layers
[10] Sequential       : 3   layers
[11] Sequential       : 2   layers
[12] Sequential       : 4   layers
[13] Sequential       : 1   layers
[14] Conv2d           : 1   layers
[15] BatchNorm2d      : 1   layers
[16] ReLU             : 1   layers"""

MNASNET_0_8 = """\
[0 ] _InvertedResidual: 8   layers
[1 ] _InvertedResidual: 8   layers
[2 ] _InvertedResidual: 8   layers"""

WIDE_RESNET50_2 = """\
[0 ] (conv1)    Conv2d           : 1   layers
[1 ] (bn1)      BatchNorm2d      : 1   layers
[2 ] (relu)     ReLU             : 1   layers
[3 ] (maxpool)  MaxPool2d        : 1   layers
[4 ] (layer1)   Sequential       : 3   layers
[5 ] (layer2)   Sequential       : 4   layers
[6 ] (layer3)   Sequential       : 6   layers
[7 ] (layer4)   Sequential       : 3   layers
[8 ] (avgpool)  AdaptiveAvgPool2d: 1   layers
[9 ] (fc)       Linear           : 1   layers"""

WIDE_RESNET50_2_4 = """\
[0 ] Bottleneck       : 9   layers
[1 ] Bottleneck       : 7   layers
[2 ] Bottleneck       : 7   layers"""

MNASNET_0_8_0 = """\
_InvertedResidual(
  (layers): Sequential(
    (0): Conv2d(16, 48, kernel_size=(1, 1), stride=(1, 1), bias=False)
    (1): BatchNorm2d(48, eps=1e-05, momentum=0.00029999999999996696, affine=True, track_running_stats=True)
    (2): ReLU(inplace=True)
    (3): Conv2d(48, 48, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=48, bias=False)
    (4): BatchNorm2d(48, eps=1e-05, momentum=0.00029999999999996696, affine=True, track_running_stats=True)
    (5): ReLU(inplace=True)
    (6): Conv2d(48, 24, kernel_size=(1, 1), stride=(1, 1), bias=False)
    (7): BatchNorm2d(24, eps=1e-05, momentum=0.00029999999999996696, affine=True, track_running_stats=True)
  )
)"""

WIDE_BOTTLENECK = """\
Bottleneck(
  (conv1): Conv2d(64, 128, kernel_size=(1, 1), stride=(1, 1), bias=False)
  (bn1): BatchNorm2d(128, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (conv2): Conv2d(128, 128, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
  (bn2): BatchNorm2d(128, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (conv3): Conv2d(128, 256, kernel_size=(1, 1), stride=(1, 1), bias=False)
  (bn3): BatchNorm2d(256, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (relu): ReLU(inplace=True)
  (downsample): Sequential(
    (0): Conv2d(64, 256, kernel_size=(1, 1), stride=(1, 1), bias=False)
    (1): BatchNorm2d(256, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  )
)"""

def same_text(actual, expected):
    "Equal line by line, trailing spaces aside."
    strip = lambda s: [l.rstrip() for l in str(s).strip('\n').split('\n')]
    assert strip(actual) == strip(expected)

def seed_repr(module):
    "A module's repr as the original arch_summary printed it: newer torch adds `bias=True` to BatchNorm's repr."
    return re.sub(r'affine=True, bias=True', 'affine=True', repr(module))

@pytest.fixture(scope='module')
def wide(): return wide_resnet50_2()

@pytest.fixture(scope='module')
def mnasnet(): return MNASNet(1.0)

def test_xresnet18_matches_seed():
    same_text(arch_summary(xresnet18), XRESNET18)
    same_text(arch_summary(xresnet18, verbose=True), XRESNET18_VERBOSE)

def test_mnasnet_drill_in_matches_seed(mnasnet):
    same_text(arch_summary(mnasnet, 0), MNASNET_0)
    same_text(arch_summary(mnasnet, [0, 8]), MNASNET_0_8)
    assert seed_repr(get_module(mnasnet, [0, 8, 0])) == MNASNET_0_8_0

def test_wide_resnet_matches_seed(wide):
    same_text(arch_summary(wide_resnet50_2), WIDE_RESNET50_2)       # an arch: built here, without weights
    same_text(arch_summary(wide, [4]), WIDE_RESNET50_2_4)
    same_text(arch_summary(wide.layer1), WIDE_RESNET50_2_4)        # a module is used as it is
    assert seed_repr(get_module(wide, [4, 0])) == WIDE_BOTTLENECK

def test_rows_are_data(wide):
    s = arch_summary(wide)
    assert isinstance(s, ArchSummary) and len(s) == 10 and s.module is wide
    r = s[4]
    assert (r.idx, r.name, r.cls, r.n_layers, r.children) == (4, 'layer1', 'Sequential', 3, ['Bottleneck'] * 3)
    assert [r.n_layers for r in s] == [1, 1, 1, 1, 3, 4, 6, 3, 1, 1]
    md = s._repr_markdown_().splitlines()
    assert md[0] == '| idx | name | class | layers |' and md[6] == '| 4 | layer1 | Sequential | 3 |'
    html = s._repr_html_()
    assert html.startswith('<table>') and html.count('<tr>') == 11 and '<td>layer1</td>' in html
    assert repr(s) == str(s)

def test_n_layers_counts_children_of_containers_else_leaves():
    assert n_layers(nn.Sequential(nn.Sequential(nn.Linear(1, 1), nn.ReLU()), nn.ReLU())) == 2
    assert n_layers(nn.ModuleList([nn.Linear(1, 1)] * 3)) == 3
    assert n_layers(nn.Linear(2, 2)) == 1
    assert n_layers(nn.TransformerEncoderLayer(8, 2, 16)) == 8   # self_attn(out_proj), 2 linears, 2 norms, 3 dropouts

def test_resnetx_children_are_named_and_reachable_by_name():
    "Whatever ResNetX calls its children, the summary names them and a name drills in as its index does"
    s = arch_summary(resnetx18, verbose=True)
    assert s.named and len(s) > 2 and str(s).splitlines()[0].startswith(f'[0 ] ({s[0].name})')
    model = resnetx18()
    for r in s:
        assert str(arch_summary(model, r.name)) == str(arch_summary(model, r.idx))

def test_long_names_widen_their_column():
    "As in the original arch_summary, the longest name keeps two spaces after it."
    m = nn.Sequential()
    m.add_module('classifier_head', nn.Linear(2, 2)); m.add_module('x', nn.Identity())
    m.add_module('y', nn.TransformerEncoderLayer(8, 2, 16))
    same_text(arch_summary(m), """\
[0 ] (classifier_head)  Linear                 : 1   layers
[1 ] (x)                Identity               : 1   layers
[2 ] (y)                TransformerEncoderLayer: 8   layers""")

def test_arch_is_built_without_pretrained_weights():
    seen = []
    def fastai_style(pretrained=True, **kwargs): seen.append(('pretrained', pretrained)); return nn.Linear(1, 1)
    def torchvision_style(*, weights='DEFAULT', **kwargs): seen.append(('weights', weights)); return nn.Linear(1, 1)
    arch_summary(fastai_style); get_module(torchvision_style, [])
    assert seen == [('pretrained', False), ('weights', None)]

def test_names_follow_one_rule():
    "A name only timm has is timm's; a name both have is torchvision's, `timm/NAME` timm's"
    s = arch_summary('resnet10t')
    assert [r.name for r in s][:1] == ['conv1'] and 'global_pool' in [r.name for r in s]      # timm's ResNet
    assert [r.name for r in arch_summary('resnet18')][-2:] == ['avgpool', 'fc']                 # torchvision's
    assert [r.name for r in arch_summary('timm/resnet18')][-2:] == ['global_pool', 'fc']

def test_learner_arch_summary():
    x = torch.randn(4, 3, 32, 32); y = torch.randint(0, 2, (4,))
    dls = DataLoaders.from_dsets(list(zip(x, y)), list(zip(x, y)), bs=2)
    learn = Learner(dls, nn.Sequential(resnetx18(), nn.Linear(1000, 2)), loss_func=CrossEntropyLossFlat())
    assert str(learn.arch_summary()) == str(arch_summary(learn.model))
    assert str(learn.arch_summary(0)) == str(arch_summary(resnetx18))
    assert learn.arch_summary([0, 1], verbose=True).verbose

def test_bad_input_errors(wide):
    with pytest.raises(TypeError, match=r"arch_or_model=42 \(a int\) is neither an nn.Module nor an arch callable"):
        arch_summary(42)
    with pytest.raises(TypeError, match=r"a list\) is neither"): arch_summary([1, 2])
    with pytest.raises(ValueError, match=r"arch_or_model='no_such_arch' is not known: allowed are our model names"):
        arch_summary('no_such_arch')
    with pytest.raises(TypeError, match=r"returned a str, not an nn.Module"): arch_summary(lambda: 'model')
    with pytest.raises(TypeError, match=r"could not be built"): arch_summary(MNASNet)   # a class that needs `alpha`
    with pytest.raises(IndexError, match=r"idx\[0\]=10 is out of range for ResNet at level 0: it has 10 children, "
                                          r"valid indices are 0\.\.9"):
        get_module(wide, [10])
    with pytest.raises(IndexError, match=r"idx\[1\]=3 is out of range for Sequential at level 1: it has 3 children, "
                                          r"valid indices are 0\.\.2"):
        arch_summary(wide, [4, 3])
    with pytest.raises(IndexError, match=r"idx\[1\]=0: Conv2d at level 1 has no children"): get_module(wide, [0, 0])
    with pytest.raises(IndexError, match=r"no child named 'layer9'"): get_module(wide, 'layer9')
    with pytest.raises(TypeError, match=r"idx\[0\]=1.5 is a float; allowed: an int"): get_module(wide, 1.5)
    assert get_module(wide, -1) is wide.fc and get_module(wide, ['layer1', 0]) is wide.layer1[0]


def test_index_bounds_and_long_names_in_errors(wide):
    "The first child from the end is -len; one more is out of range. A name of 80 characters is shown whole, 81 cut."
    assert get_module(wide, -10) is wide.conv1
    with pytest.raises(IndexError, match=r"idx\[0\]=-11 is out of range .* \(or -10\.\.-1 from the end\)"):
        get_module(wide, -11)
    class Long:
        def __init__(self, n): self.n = n
        def __repr__(self): return 'x' * self.n
    for n, shown in ((80, 'x' * 80), (81, 'x' * 77 + r'\.\.\.')):
        with pytest.raises(TypeError, match=rf"^arch_or_model={shown} \(a Long\) is neither"): arch_summary(Long(n))


def broken_arch(**kwargs): raise RuntimeError('no weights here')


def broken_plain(): raise RuntimeError('nothing to build')


def returns_text(): return 'model'


def test_a_failing_arch_is_named_by_its_qualified_name():
    "An arch that takes **kwargs is asked for random weights (`pretrained=False`); one that takes nothing, nothing."
    with pytest.raises(TypeError) as e: arch_summary(broken_arch)
    assert str(e.value) == ("arch_or_model=broken_arch could not be built with {'pretrained': False} (RuntimeError: "
                            "no weights here); pass a model instance instead")
    with pytest.raises(TypeError) as e: arch_summary(broken_plain)
    assert str(e.value) == ("arch_or_model=broken_plain could not be built with no arguments (RuntimeError: nothing "
                            "to build); pass a model instance instead")
    with pytest.raises(TypeError) as e: arch_summary(returns_text)
    assert str(e.value) == "arch_or_model=returns_text returned a str, not an nn.Module"


def test_the_summary_keeps_its_index_and_defaults_to_plain_rows():
    from collections import OrderedDict
    m = nn.Sequential(OrderedDict(a=nn.Sequential(nn.ReLU(), nn.Tanh()), b=nn.ReLU()))
    assert arch_summary(m, 0).idx == 0 and arch_summary(m).idx is None and arch_summary(m, 0).module is m.a
    rows = arch_summary(m, verbose=True).rows
    assert str(ArchSummary(m, rows)) == "[0 ] Sequential       : 2   layers\n[1 ] ReLU             : 1   layers"


def test_notebook_tables_by_hand():
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), block=nn.Sequential(nn.ReLU(), nn.Linear(2, 2))))
    named.add_module('a<b', nn.ReLU())
    assert arch_summary(named, verbose=True)._repr_markdown_() == (
        "| idx | name | class | layers | children |\n|---|---|---|---|---|\n| 0 | conv | Conv2d | 1 |  |\n"
        "| 1 | block | Sequential | 2 | ReLU, Linear |\n| 2 | a<b | ReLU | 1 |  |")
    assert arch_summary(named)._repr_html_() == (
        "<table><thead><tr><th>idx</th><th>name</th><th>class</th><th>layers</th></tr></thead><tbody>"
        "<tr><td>0</td><td>conv</td><td>Conv2d</td><td>1</td></tr>"
        "<tr><td>1</td><td>block</td><td>Sequential</td><td>2</td></tr>"
        "<tr><td>2</td><td>a&lt;b</td><td>ReLU</td><td>1</td></tr></tbody></table>")
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())                        # numbered children: no name column
    assert arch_summary(plain)._repr_markdown_() == (
        "| idx | class | layers |\n|---|---|---|\n| 0 | Conv2d | 1 |\n| 1 | ReLU | 1 |")
