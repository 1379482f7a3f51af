"model_summary: exact FLOPs/MACs per module call, on meta and real tensors."
import copy
import pytest, torch, timm, torchvision
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from fastai.vision.models.xresnet import xresnet18
from fastai_resnetx.inspection.flops import model_summary, ModelSummary, CONVENTION
from fastai_resnetx.inspection.build import build_arch, build_on_meta, weights_off_kwargs

def fcm_total(model, size, device='meta'):
    "FlopCounterMode's own total for `model` on `size`, the reference our totals must equal"
    model = model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter: model(torch.zeros(size, device=device))
    return counter.get_total_flops()

def test_conv2d_by_hand():
    s = model_summary(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 16, 16))
    assert isinstance(s, ModelSummary)
    assert s.total_macs == 16*16 * 8 * 3*3*3  # each output pixel and channel: a 3x3x3 dot product; bias not counted
    assert s.total_flops == 2 * s.total_macs
    assert s.rows[0].output_shape == (1, 8, 16, 16) and s.rows[0].params == 8*3*3*3 + 8

def test_linear_by_hand():
    s = model_summary(nn.Linear(10, 5), (4, 10))
    assert (s.total_macs, s.total_flops) == (4*10*5, 2*4*10*5)

class Residual(nn.Module):
    "A functional forward: the residual add and a matmul run in the parent, not in a child module"
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.w = nn.Parameter(torch.randn(8, 3))
    def forward(self, x): return (x + self.conv(x)) @ self.w

def test_functional_ops_counted_in_parent():
    s = model_summary(Residual(), (2, 4, 8, 8))
    root, conv = s.rows
    conv_macs, matmul_macs = 2*8*8 * 4*4, 2*4*8 * 8*3
    assert conv.macs == conv_macs and conv.self_macs == conv_macs
    assert root.self_macs == matmul_macs          # the add counts 0, the matmul counts
    assert s.total_macs == conv_macs + matmul_macs == root.macs
    assert sum(r.self_flops for r in s.rows) == s.total_flops

class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)
    def forward(self, x): return self.lin(torch.relu(self.lin(x)))

def test_module_called_twice_counts_every_call():
    s = model_summary(Twice(), (3, 6))
    lin_rows = s.rows.filter(lambda r: r.name == 'lin')
    assert len(lin_rows) == 2 and lin_rows.attrgot('call') == [0, 1]
    assert s.total_macs == 2 * 3*6*6
    assert s.total_params == 6*6 + 6                 # shared parameters counted once
    assert 'lin (Linear) #2' in str(s)

def test_resnet50_matches_torchvision_ops():
    s = model_summary(torchvision.models.resnet50)  # built on meta, no weights downloaded
    assert round(s.total_macs / 1e9, 3) == torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta['_ops'] == 4.089
    assert s.total_params == torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta['num_params']
    assert s.total_flops == fcm_total(build_arch(torchvision.models.resnet50, 'meta'), (1, 3, 224, 224))
    # the rows add up: the leaf rows (a CNN runs no FLOPs outside its layers), and the self column of every row
    assert sum(r.flops for r in s.rows if r.is_leaf) == s.total_flops == sum(r.self_flops for r in s.rows)
    assert sum(r.flops for r in s.rows if r.depth == 1) == s.total_flops == s.rows[0].flops

@pytest.mark.parametrize('arch', [torchvision.models.mobilenet_v2, torchvision.models.efficientnet_b0,
                                  timm.models.convnext_tiny], ids=['mobilenet_v2', 'efficientnet_b0', 'convnext_tiny'])
def test_totals_equal_flop_counter_mode(arch):
    size = (1, 3, 96, 96)
    s = model_summary(arch, size)
    assert s.total_flops == fcm_total(build_arch(arch, 'meta'), size) > 0
    assert sum(r.self_flops for r in s.rows) == s.total_flops

def test_meta_equals_real():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    meta, real = model_summary(model, (2, 3, 64, 64)), model_summary(model, (2, 3, 64, 64), device='cpu')
    assert meta.device == 'meta' and real.device == 'cpu'
    assert meta.total_flops == real.total_flops
    assert meta.rows.attrgot('flops') == real.rows.attrgot('flops')
    assert meta.rows.attrgot('output_shape') == real.rows.attrgot('output_shape')

class Attention(nn.Module):
    def __init__(self, d=8, heads=2):
        super().__init__()
        self.qkv,self.heads = nn.Linear(d, 3*d, bias=False),heads
    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)

def test_attention_counted_on_cpu_and_meta():
    b, n, d, h = 1, 5, 8, 2
    attention_macs = 2 * b*h * n*n * (d//h)  # q @ k.T and scores @ v
    for device in ('meta', 'cpu'):  # FlopCounterMode alone counts 0 for it on CPU
        s = model_summary(Attention(d, h), (b, n, d), device=device)
        assert s.rows[0].self_macs == attention_macs
        assert s.total_macs == b*n*d*3*d + attention_macs

def test_model_left_as_found():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).train()
    model.layer1.eval()  # a mixed mode, restored module by module
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    for device in ('meta', 'cpu'): model_summary(model, (2, 3, 32, 32), device=device)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BatchNorm's running stats untouched
    assert all(p.device.type == 'cpu' for p in model.parameters())
    from torch.nn.modules import module
    assert not module._global_forward_hooks and not module._global_forward_pre_hooks
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())

def test_arch_callables_and_names():
    s = model_summary(xresnet18, (1, 3, 64, 64), n_out=10)  # fastai arch: pretrained=False, kwargs go to the arch
    assert s.rows[-1].output_shape == (1, 10) and s.total_flops > 0
    t = model_summary('resnet10t', (1, 3, 64, 64))         # a timm name
    assert t.total_flops == model_summary(timm.models.resnet10t, (1, 3, 64, 64)).total_flops > 0

def test_table_text_and_markdown():
    s = model_summary(torchvision.models.resnet18, (1, 3, 64, 64), max_depth=1)
    text = str(s)
    assert 'FLOPs = 2 x MACs' in text and 'layer1 (Sequential)' in text and 'layer1.0' not in text
    assert f'{s.total_macs:,}' in text and repr(s) == text
    md = s._repr_markdown_()
    assert '|Module|Input|Output|Params|MACs|FLOPs|Self FLOPs|' in md and '&emsp;layer1 (Sequential)' in md
    assert 'layer1.0 (BasicBlock)' in s.table(max_depth=2)
    assert len(s.rows) > len(s._cells())  # rows keep every call, the table shows down to max_depth
    df = s.to_df()
    assert df.self_flops.sum() == s.total_flops

def test_wrong_rank_names_input_and_module():
    with pytest.raises(RuntimeError, match=r"input_size=\(3, 64, 64\) in module 'bn1' \(BatchNorm2d\).*4-dim input"):
        model_summary(torchvision.models.resnet18, (3, 64, 64))
    with pytest.raises(RuntimeError, match=r"input_size=\(1, 64, 64, 3\) in module 'conv1'.*takes 3 channels"):
        model_summary(torchvision.models.resnet18, (1, 64, 64, 3))  # channels last

def test_model_failing_on_input_names_module():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    with pytest.raises(RuntimeError, match=r"input_size=\(1, 3, 5\) in module '1' \(Linear\) called with input 1x15"):
        model_summary(model, (1, 3, 5), device='cpu')
    from torch.nn.modules import module
    assert not module._global_forward_hooks and model.training  # cleaned up after the failure

@pytest.mark.parametrize('kwargs, err, match', [
    (dict(input_size=(1, 0, 4)), ValueError, r'input_size=\(1, 0, 4\) is not a shape'),
    (dict(input_size='1x3x224x224'), ValueError, 'input_size='),
    (dict(device='gpu0'), ValueError, r"device='gpu0' is not a torch device"),
    (dict(max_depth=-1), ValueError, r'`max_depth` must be an integer >= 0 \(or None: all rows; 0: the model only\), got -1'),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match): model_summary(nn.Linear(2, 2), **kwargs)

def test_bad_model():
    with pytest.raises(TypeError, match='model_or_arch=42'): model_summary(42)
    with pytest.raises(ValueError, match="arch='no_such_net'"): model_summary('no_such_net')

@pytest.mark.parametrize('name, size, device', [
    ('vit_b_16', (1, 3, 224, 224), 'meta'),                       # a ViT: attention as functional matmuls
    ('swin_t', (1, 3, 224, 224), 'meta'),                         # a Swin: shifted windows
    ('regnet_y_400mf', (1, 3, 224, 224), 'meta'),                 # built on meta although its builder reads tensors back
    ('lraspp_mobilenet_v3_large', (1, 3, 520, 520), 'meta'),      # segmentation, at torchvision's 520 px
    ('r3d_18', (1, 3, 16, 112, 112), 'meta'),                     # video: 16 frames of 112 px
    pytest.param('ssdlite320_mobilenet_v3_large', (1, 3, 320, 320), 'cpu', marks=pytest.mark.slow),  # a detector: on CPU
])
def test_matches_torchvision_ops(name, size, device):
    "A representative subset of bench/flops_vs_torchvision.md: each family against torchvision's published `_ops`"
    s = model_summary(name, size)
    assert round(s.total_macs / 1e9, 3) == torchvision.models.get_model_weights(name).DEFAULT.meta['_ops']
    assert s.device == device and (s.fallback is None) == (device == 'meta')

def test_build_on_meta_where_the_builder_reads_tensors_back():
    with pytest.raises(NotImplementedError):   # RegNet's widths are computed with torch ops and `.tolist()`
        with torch.device('meta'): torchvision.models.regnet_y_400mf()
    model = build_on_meta(torchvision.models.regnet_y_400mf)
    assert {p.device.type for p in model.parameters()} == {'meta'}

def state_of(model):
    "What a counter must leave as it found: state with devices, modes, hooks, every module's attribute names"
    return ({k: (v.clone(), v.device) for k, v in model.state_dict().items()}, [m.training for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()], [sorted(vars(m)) for m in model.modules()])

def assert_same_state(before, after):
    (sd0, *rest0), (sd1, *rest1) = before, after
    assert sd0.keys() == sd1.keys() and rest0 == rest1
    assert all(torch.equal(sd0[k][0], sd1[k][0]) and sd0[k][1] == sd1[k][1] for k in sd0)
    from torch.nn.modules import module
    assert not module._global_forward_hooks and not module._global_forward_pre_hooks

@pytest.mark.slow
def test_detector_falls_back_to_cpu_and_is_left_as_found():
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                                            num_classes=3).train()
    before = state_of(model)
    s = model_summary(model, (1, 3, 320, 320))
    assert s.device == 'cpu' and s.fallback.startswith('NotImplementedError')   # `nonzero` has no meta kernel
    assert 'counted on cpu (meta could not run it: NotImplementedError' in str(s)
    backbone = s.rows.filter(lambda r: r.name == 'backbone')[0]
    assert backbone.input_shape == (1, 3, 320, 320) and backbone.flops == fcm_total(copy.deepcopy(model.backbone).to('meta'), (1, 3, 320, 320))
    assert_same_state(before, state_of(model.train()))
    assert all(a.device.type == 'cpu' for a in model.rpn.anchor_generator.cell_anchors)   # not left on meta
    model.eval()(torch.rand(1, 3, 320, 320))                                             # and the model still runs

class Halfway(nn.Module):
    "A forward that changes everything it can, then raises"
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.cache = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), []
    def forward(self, x):
        self.calls = 1                                   # a new attribute
        self.cache.append(x)                             # a list that grows
        self.register_buffer('seen', x)                  # a new buffer
        self.conv.register_forward_hook(lambda *args: None)
        self.bn.train()                                  # a mode switched: BatchNorm moves its running stats
        x = self.bn(self.conv(x))
        self.bn.running_var.mul_(2)                      # a buffer changed in place
        raise ValueError('halfway')

@pytest.mark.parametrize('device', ['meta', 'cpu'])
def test_model_raising_halfway_is_left_as_found(device):
    model = Halfway().eval()
    before = state_of(model)
    with pytest.raises(RuntimeError, match=r"Halfway's own forward: ValueError: halfway"): model_summary(model, (2, 3, 4, 4), device)
    assert_same_state(before, state_of(model))
    assert model.cache == [] and 'seen' not in dict(model.named_buffers())

class ReadsBack(nn.Module):
    "A conv whose output is scaled by a value read back from the data: `meta` has none"
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
    def forward(self, x): return self.conv(x) * x.mean().item()

def test_fallback_only_where_it_can_run():
    assert model_summary(ReadsBack(), (1, 3, 8, 8)).total_macs == 8*8 * 2 * 3
    with pytest.raises(RuntimeError, match=r'item\(\) cannot be called on meta'): model_summary(ReadsBack(), (1, 3, 8, 8), fallback=False)
    with pytest.raises(RuntimeError, match=r"weights are on 'meta'"): model_summary(ReadsBack().to('meta'), (1, 3, 8, 8))

def test_builders_never_download(monkeypatch, tmp_path):
    def no_download(*args, **kwargs): raise AssertionError(f'tried to download {args[:1]}')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))       # an empty cache: any weights would have to be downloaded
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    for name in ('fcn_resnet50', 'fasterrcnn_resnet50_fpn', 'resnet18'):   # backbone weights are on by default for the first two
        build_arch(name, 'meta')
    assert model_summary('lraspp_mobilenet_v3_large', (1, 3, 64, 64)).total_macs > 0
    def builder(weights='W', weights_backbone='B', pretrained=True, pretrained_backbone=True, backbone_weights='C',
                pretrained_cfg=None, num_classes=10, **kwargs): ...
    assert weights_off_kwargs(builder) == dict(weights=None, weights_backbone=None, pretrained=False,
                                               pretrained_backbone=False, backbone_weights=None)

def test_builds_leave_the_random_state_and_repeat():
    "Random weights, the same on every build (so a data-dependent count repeats), and the user's random state untouched"
    torch.manual_seed(1); expected = torch.rand(3)
    torch.manual_seed(1)
    first, second = build_arch(torchvision.models.resnet18).fc.weight, build_arch(torchvision.models.resnet18).fc.weight
    assert torch.equal(torch.rand(3), expected) and torch.equal(first, second)


def _tiny():
    "A conv, a flatten, a linear: 2x2x2 outputs of 9 multiply-adds (72 MACs), then 8 x 3 (24 MACs, the bias excluded)."
    return nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(8, 3))


def test_rows_as_a_data_frame_by_hand():
    row = lambda name, kind, depth, leaf, i, o, params, macs, own: dict(
        name=name, module_type=kind, depth=depth, call=0, is_leaf=leaf, input_shape=i, output_shape=o, params=params,
        macs=macs, flops=2 * macs, self_flops=2 * own)
    assert model_summary(_tiny(), (1, 1, 4, 4)).to_df().to_dict('records') == [
        row('', 'Sequential', 0, False, (1, 1, 4, 4), (1, 3), 18 + 27, 96, 0),
        row('0', 'Conv2d', 1, True, (1, 1, 4, 4), (1, 2, 2, 2), 18, 72, 72),
        row('1', 'Flatten', 1, True, (1, 2, 2, 2), (1, 8), 0, 0, 0),
        row('2', 'Linear', 1, True, (1, 8), (1, 3), 27, 24, 24)]


def test_the_markdown_table_by_hand():
    m = _tiny()
    m.add_module('a|b', nn.Identity())                                           # a pipe in a name is escaped
    md = model_summary(m, (1, 1, 4, 4)).markdown()
    head, table, foot = md.split('\n\n')
    assert head.startswith('Sequential: input 1x1x4x4, counted on meta by torch.utils.flop_counter.FlopCounterMode  \n'
                           'FLOPs = 2 x MACs;')
    assert table == ('|Module|Input|Output|Params|MACs|FLOPs|Self FLOPs|\n|:--|:--|:--|--:|--:|--:|--:|\n'
                     '|Sequential|1x1x4x4|1x3|45|96|192|0|\n|&emsp;0 (Conv2d)|1x1x4x4|1x2x2x2|18|72|144|144|\n'
                     '|&emsp;1 (Flatten)|1x2x2x2|1x8|0|0|0|0|\n|&emsp;2 (Linear)|1x8|1x3|27|24|48|48|\n'
                     '|&emsp;a\\|b (Identity)|1x3|1x3|0|0|0|0|')
    assert foot == 'Total params: 45 (trainable: 45)  \nTotal MACs: 96 (96)   Total FLOPs: 192 (192)'
    assert model_summary(m, (1, 1, 4, 4)).markdown(max_depth=0).split('\n\n')[1].count('\n') == 2   # the model only


def test_the_words_of_a_failed_count():
    bad = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(7, 3))
    with pytest.raises(RuntimeError) as e: model_summary(bad, (1, 1, 4, 4))
    assert str(e.value) == ("model_summary: Sequential failed on input_size=(1, 1, 4, 4) in module '2' (Linear) called "
                            "with input 1x8: RuntimeError: a and b must have same reduction dim, but got [1, 8] X [7, 3].")
    with pytest.raises(RuntimeError) as e: model_summary(nn.Linear(3, 3), (2, 4))
    assert str(e.value) == ("model_summary: Linear failed on input_size=(2, 4) in Linear's own forward: RuntimeError: "
                            "a and b must have same reduction dim, but got [2, 4] X [3, 3].")
    with pytest.raises(RuntimeError) as e: model_summary(_tiny(), (1, 4, 4))
    assert str(e.value).endswith(". Its first convolution (Conv2d) takes 4-dim input (batch, channels, height, width); "
                                 "input_size has 3 dims")
    with pytest.raises(RuntimeError) as e: model_summary(_tiny(), (1, 3, 4, 4))
    assert str(e.value).endswith(". Its first convolution takes 1 channels; input_size has 3 at dim 1")
    class Two(nn.Module):
        def forward(self, a, b): return a @ b
    with pytest.raises(RuntimeError, match=r"^model_summary: Two failed on input_size=\(2, 3\), \(4, 5\) in Two's own"):
        model_summary(Two(), [(2, 3), (4, 5)])


def test_failure_helpers_by_hand():
    from fastai_resnetx.inspection.flops import _one_line, _real_device, _meta_cannot_run
    assert _one_line(ValueError('first\nsecond')) == 'ValueError: first' and _one_line(KeyError()) == 'KeyError: '
    long = ValueError('x' * 200)
    assert _one_line(long) == 'ValueError: ' + 'x' * 145 + '...' and len(_one_line(long)) == 160
    assert _one_line(ValueError('x' * 148)) == 'ValueError: ' + 'x' * 148                  # 160 exactly: whole
    assert _one_line(ValueError('x' * 149)) == 'ValueError: ' + 'x' * 145 + '...'
    assert _real_device(nn.ReLU()) == torch.device('cpu') and _real_device(nn.Linear(2, 2)) == torch.device('cpu')
    assert _real_device(nn.Linear(2, 2, device='meta')) is None
    assert _meta_cannot_run(NotImplementedError('no kernel')) and _meta_cannot_run(RuntimeError('on meta tensors'))
    assert not _meta_cannot_run(RuntimeError('shapes'))
    wrapped = RuntimeError('shapes')
    wrapped.__cause__ = NotImplementedError('no kernel')
    assert _meta_cannot_run(wrapped)


TINY_TABLE = """\
================================================================
Module         Input    Output   Params  MACs  FLOPs  Self FLOPs
================================================================
Sequential     1x1x4x4  1x3          45    96    192           0
  0 (Conv2d)   1x1x4x4  1x2x2x2      18    72    144         144
  1 (Flatten)  1x2x2x2  1x8           0     0      0           0
  2 (Linear)   1x8      1x3          27    24     48          48
================================================================
Total params: 45 (trainable: 45)
Total MACs: 96 (96)   Total FLOPs: 192 (192)"""


def test_the_text_table_by_hand():
    "Text columns left-aligned, numbers right-aligned, two spaces between; the header says what counted and how."
    lines = model_summary(_tiny(), (1, 1, 4, 4)).table().splitlines()
    assert lines[0] == 'Sequential: input 1x1x4x4, counted on meta by torch.utils.flop_counter.FlopCounterMode'
    assert lines[1] == CONVENTION + '.'
    assert lines[2] == 'Module FLOPs/MACs include their children; the Self FLOPs column adds up to the total.'
    assert '\n'.join(lines[3:]) == TINY_TABLE
    class Two(nn.Module):
        def forward(self, a, b): return a @ b
    assert model_summary(Two(), [(2, 3), (3, 5)]).table().splitlines()[0] == (
        'Two: input 2x3, 3x5, counted on meta by torch.utils.flop_counter.FlopCounterMode')
    s = model_summary(ReadsBack(), (1, 3, 8, 8))
    assert s.table().splitlines()[0] == (f'ReadsBack: input 1x3x8x8, counted on cpu (meta could not run it: '
                                         f'{s.fallback}) by torch.utils.flop_counter.FlopCounterMode')


def test_number_and_shape_formats_by_hand():
    from fastai_resnetx.inspection.flops import _human, _shape_str, _shape_of
    table = {0: '0', 999: '999', 1000: '1.000K', 1001: '1.001K', 999_999: '999.999K', 1_234_567: '1.235M',
             10**9: '1.000G', 2_500_000_000_000: '2.500T', -1500: '-1.500K', 10**15: '1000.000T'}
    assert {n: _human(n) for n in table} == table
    assert _shape_str(None) == '' and _shape_str((1, 3)) == '1x3' and _shape_str(((1, 3), (2,))) == '[1x3, 2]'
    assert _shape_str(((1, 2), ((3,), (4, 5)))) == '[1x2, [3, 4x5]]'
    t = lambda *s: torch.empty(s)
    assert _shape_of(t(1, 2)) == (1, 2) and _shape_of([t(1, 2)]) == (1, 2) and _shape_of('text') is None
    assert _shape_of({'a': t(1, 2), 'b': t(3)}) == ((1, 2), (3,)) and _shape_of(('x', t(4))) == (4,)
    assert _shape_of([]) is None and _shape_of(['x', 1]) is None


def test_params_per_module_nested_and_shared():
    inner = nn.Linear(2, 3)
    m = nn.Sequential(nn.Sequential(inner), nn.Linear(3, 1))
    rows = {r.name: r.params for r in model_summary(m, (1, 2)).rows}
    assert rows == {'': 9 + 4, '0': 9, '0.0': 9, '1': 4}
    tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[1].weight = tied[0].weight              # a shared weight counts once, at its first owner: rows add up
    assert {r.name: r.params for r in model_summary(tied, (1, 2)).rows} == {'': 4 + 2 + 2, '0': 4 + 2, '1': 2}


class Unregistered(nn.Module):
    "Calls a module it does not register (kept in a plain list): counted, named by where it was called."
    def __init__(self):
        super().__init__()
        self.lin, self.extra = nn.Linear(2, 2), [nn.Linear(2, 3)]
    def forward(self, x): return self.extra[0](self.lin(x))


def test_modules_outside_the_tree_are_counted_and_named():
    rows = [(r.name, r.params, r.flops) for r in model_summary(Unregistered(), (1, 2)).rows]
    assert rows == [('', 6, 2 * (4 + 6)), ('lin', 6, 8), ('<Linear>', 9, 12)]
    outer = nn.Sequential(Unregistered())
    assert [r.name for r in model_summary(outer, (1, 2)).rows] == ['', '0', '0.lin', '0.<Linear>']


def test_input_sizes_accepted_and_refused():
    assert model_summary(nn.Linear(5, 2), (5,)).rows[0].output_shape == (2,)          # one dim is a shape
    assert model_summary(nn.Flatten(), [1, 2, 3]).input_size == ((1, 2, 3),)           # no float tensor: float32
    class Two(nn.Module):
        def forward(self, a, b): return a @ b
    assert model_summary(Two(), [[2, 3], [3, 5]]).input_size == ((2, 3), (3, 5))
    for bad in ((), [], (1, 0), (1, 2.0), ((1, 2), ()), (True, 3)):
        with pytest.raises(ValueError) as e: model_summary(nn.Flatten(), bad)
        assert str(e.value) == (f'input_size={bad!r} is not a shape: pass a tuple of positive ints such as '
                                '(1, 3, 224, 224) (batch, channels, height, width), or a list of such tuples for a '
                                'model with several inputs')


def test_given_inputs_keep_their_dtype_and_values():
    s = model_summary(nn.Embedding(10, 4), inputs=torch.tensor([[1, 2, 3]]))     # int64 indices, on meta too
    assert s.device == 'meta' and s.rows[0].output_shape == (1, 3, 4)
    class Positives(nn.Module):
        "How many values it keeps depends on the values: only the given tensor tells."
        def forward(self, x): return x[x > 0]
    s = model_summary(Positives(), inputs=torch.tensor([[1., -1., 2.]]), device='cpu')
    assert s.rows[0].output_shape == (2,)


class ReadsBackC(nn.Module):
    "ReadsBack with `c` output channels: an arch whose keyword arguments must reach the CPU rebuild too."
    def __init__(self, c=2):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1, bias=False)
    def forward(self, x): return self.conv(x) * x.mean().item()


def reads_back_arch(c=2): return ReadsBackC(c)


def test_devices_and_archs_words_and_rebuilds():
    with pytest.raises(ValueError) as e: model_summary(_tiny(), (1, 1, 4, 4), device='nope')
    assert str(e.value) == "device='nope' is not a torch device: use 'meta' (no memory, no compute), 'cpu' or 'cuda'"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError) as e: model_summary(_tiny(), (1, 1, 4, 4), device='cuda')
        assert str(e.value) == "device='cuda': CUDA is not available here; use 'meta' (same counts, no compute) or 'cpu'"
    with pytest.raises(TypeError) as e: model_summary(_tiny(), (1, 1, 4, 4), n_out=3)
    assert str(e.value) == "model_summary got arch keyword arguments ['n_out'] with a model, not an arch"
    with pytest.raises(TypeError) as e: model_summary(3, (1, 1, 4, 4))
    assert str(e.value) == "model_or_arch=3: expected an nn.Module, a function that builds one, or a model name"
    s = model_summary(reads_back_arch, (1, 3, 8, 8), device='cpu', c=5)       # an arch on a real device, its kwargs
    assert s.device == 'cpu' and s.fallback is None and s.rows[-1].output_shape == (1, 5, 8, 8)
    s = model_summary(reads_back_arch, (1, 3, 8, 8), c=4)                      # meta cannot: rebuilt on CPU, kwargs too
    assert s.device == 'cpu' and s.fallback == 'RuntimeError: Tensor.item() cannot be called on meta tensors'
    assert s.rows[-1].output_shape == (1, 4, 8, 8) and s.total_flops == 2 * 3 * 4 * 64


def test_inputs_words_and_fallbacks():
    assert model_summary(nn.Linear(3, 2), inputs=torch.randn(2, 3)).rows[0].input_shape == (2, 3)   # one tensor
    with pytest.raises(TypeError) as e: model_summary(nn.Linear(3, 2), inputs=[torch.randn(1, 3), 'x'])
    assert str(e.value) == "inputs: expected a tensor or a list of tensors, got ['Tensor', 'str']"
    assert model_summary(nn.Linear(3, 2).double(), (1, 3)).total_flops == 12   # the model's dtype for the input
    class Positives(nn.Module):
        def forward(self, x): return x[x > 0]
    s = model_summary(Positives(), inputs=torch.tensor([[1., -1., 2.]]))      # meta cannot: the given values on CPU
    assert s.device == 'cpu' and s.rows[0].output_shape == (2,)
    with pytest.raises(RuntimeError) as e: model_summary(ReadsBackC().to('meta'), (1, 3, 8, 8))
    assert str(e.value) == ("model_summary: ReadsBackC failed on input_size=(1, 3, 8, 8) in ReadsBackC's own forward: "
                            "RuntimeError: Tensor.item() cannot be called on meta tensors. The model's weights are on "
                            "'meta', so it can't run elsewhere either: pass its arch (model_summary builds it on CPU "
                            "then) or the model on a real device")
    class BadBoth(nn.Module):
        "Meta cannot run it, and on CPU its linear does not fit: the CPU failure, with the input size."
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)
        def forward(self, x):
            x.mean().item()
            return self.lin(x)
    with pytest.raises(RuntimeError) as e: model_summary(BadBoth(), (1, 3))
    assert str(e.value) == ("model_summary: BadBoth failed on input_size=(1, 3) in module 'lin' (Linear) called with "
                            "input 1x3: RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x3 and 4x2)")


def test_the_rank_hint_names_each_convs_dims():
    with pytest.raises(RuntimeError) as e: model_summary(nn.Conv1d(2, 3, 3), (1, 2, 8, 8))
    assert str(e.value).endswith(". Its first convolution (Conv1d) takes 3-dim input (batch, channels, length); "
                                 "input_size has 4 dims")
    with pytest.raises(RuntimeError) as e: model_summary(nn.Conv3d(2, 3, 3), (1, 2, 8, 8))
    assert str(e.value).endswith(". Its first convolution (Conv3d) takes 5-dim input (batch, channels, depth, height, "
                                 "width); input_size has 4 dims")


def test_a_real_device_counts_on_a_fixed_random_image_and_leaves_the_users_random_state():
    class Positives(nn.Module):
        def forward(self, x): return x[x > 0]
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    s = model_summary(Positives(), (1, 50), device='cpu')
    assert torch.equal(torch.rand(3), want)                                     # the user's random state untouched
    assert s.rows[0].output_shape == (50,)                                     # an image in [0, 1): all 50 kept
    assert model_summary(nn.Linear(3, 2).double(), (1, 3), device='cpu').total_flops == 12   # the model's dtype


def test_a_fallback_keeps_the_models_dtype():
    s = model_summary(ReadsBackC().double(), (1, 3, 8, 8))                      # meta cannot; float64 on CPU
    assert s.device == 'cpu' and s.total_flops == 2 * 3 * 2 * 64
