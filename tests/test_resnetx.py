import pytest, torch, torchvision
from torch import nn
from timm.layers import DropPath
from fastai_resnetx import (ResNetX, ResNetXConfig, Stage, FoldUnit, resnetx18, resnetx34, resnetx50, resnetx101,
                            resnetx152, resnetx_mbconv, resnetx_fused, num_params, get_pred)
from fastai_resnetx.model.weights import resnet_key
from conftest import randomise, reference_forward


@pytest.mark.parametrize('ours, theirs', [(resnetx18, 'resnet18'), (resnetx34, 'resnet34'), (resnetx50, 'resnet50'),
                                          (resnetx101, 'resnet101'), (resnetx152, 'resnet152')])
def test_fold1_param_count_is_torchvision(ours, theirs):
    with torch.device('meta'):
        assert num_params(ours()) == num_params(getattr(torchvision.models, theirs)())


def copy_torchvision(ours, tv):
    sd = tv.state_dict()
    mapped = {k: resnet_key(k) for k in ours.state_dict()}
    assert set(mapped.values()) == set(sd)            # every tensor has exactly one counterpart
    ours.load_state_dict({k: sd[v] for k, v in mapped.items()})


def test_fold1_keys_are_torchvision_keys_renamed():
    "A fold=1 ResNetX's state dict is torchvision's, with `layerN.i.` -> `stageN.i.branch.` and `downsample` -> `shortcut`."
    ours, tv = resnetx50().state_dict(), torchvision.models.resnet50().state_dict()
    assert [resnet_key(k) for k in ours] == list(tv)                      # same tensors, same order
    assert 'stage2.0.branch.conv2.weight' in ours and 'stage2.0.shortcut.0.weight' in ours and 'conv1.weight' in ours


@pytest.mark.parametrize('ours, theirs', [(resnetx18, torchvision.models.resnet18), (resnetx50, torchvision.models.resnet50)])
def test_fold1_is_a_resnet(ours, theirs):
    tv, m = randomise(theirs()), ours().eval()
    copy_torchvision(m, tv)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert (m(x) - tv(x)).abs().max() <= 1e-4


LAYOUTS = [ResNetXConfig((2, 2, 2, 2), 'basic', (16, 24, 32, 48), stem_width=16, num_classes=5),
           ResNetXConfig((1, 3, 2), 'bottleneck', (32, 48, 64), strides=(1, 2, 2), stem_width=16, num_classes=5)]

@pytest.mark.parametrize('cfg', LAYOUTS, ids=['basic-2222', 'bottleneck-132'])
@pytest.mark.parametrize('fold', [1, 2, 3, 4])
def test_every_fold_matches_reference_and_sequential_body(cfg, fold):
    m = randomise(ResNetX(cfg, fold=fold))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _, ref = reference_forward(m, x, keep=True)
        n = m.plan.n_units
        assert (m.forward_features(x) - ref[n]).abs().max() <= 1e-5
        assert (m(x) - m.fc(m.global_pool(ref[n]))).abs().max() <= 1e-5
        body = nn.Sequential(*list(m.children())[:-2])                 # what fastai's create_body makes
        assert (body(x) - ref[n]).abs().max() <= 1e-5
    if fold > 1: assert any(s < sum(cfg.num_units[:m.plan.stages[l] - 1]) for l, s in enumerate(m.plan.sources))


def test_hooks_on_stages_see_their_feature_maps():
    m = randomise(resnetx18(fold=3, num_classes=4))
    x = torch.randn(1, 3, 64, 64)
    seen = {}
    hooks = [getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o)) for n in m.stage_names]
    with torch.no_grad(): m(x); _, ref = reference_forward(m, x, keep=True)
    for h in hooks: h.remove()
    ends = [2, 4, 6, 8]   # the last unit of each stage
    for n, end in zip(m.stage_names, ends):
        assert isinstance(seen[n], torch.Tensor) and torch.allclose(seen[n], ref[end], atol=1e-5)
    assert [tuple(seen[n].shape[1:]) for n in m.stage_names] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


def test_stage_alone_on_bare_tensor_is_an_error():
    m = resnetx18(fold=2)
    with pytest.raises(RuntimeError, match=r'stage2 .*fold=2.* needs outputs \[1\] of earlier stages.* they travel '
                                           r'with the output of stage1, and this input does not carry them'):
        m.stage2(torch.randn(1, 64, 8, 8))
    assert resnetx18().stage2(torch.randn(1, 64, 8, 8)).shape == (1, 128, 4, 4)   # fold 1 needs nothing more


class Passthrough(nn.Module):
    "A custom unit whose branch returns its input: an in-place add would overwrite an output later units read."
    def __init__(self, ni, nf, stride=1, act=None): super().__init__(); self.scale = nn.Parameter(torch.ones(1))
    def forward(self, x): return x


def test_custom_block_that_returns_its_input():
    cfg = ResNetXConfig((2, 2), Passthrough, (64, 64), strides=(1, 1), fold=2, num_classes=3)
    m = randomise(ResNetX(cfg))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): assert (m.forward_features(x) - reference_forward(m, x, keep=True)[1][4]).abs().max() == 0
    assert not m.units[0].add_inplace and resnetx18().units[0].add_inplace   # built-in blocks keep the in-place add


def test_fold_adds_projections():
    m = resnetx50(fold=3)
    # units whose skip changes shape get a 1x1 conv + BN projection with the cumulative stride
    srcs = m.plan.sources
    unit8 = m.units[7]                       # first unit of stage 3 reads output 4 (stage 2, fold 3): stride 2 from 512 ch
    assert srcs[7] == 4 and isinstance(unit8.shortcut, nn.Sequential)
    assert unit8.shortcut[0].stride == (2, 2) and unit8.shortcut[0].in_channels == 512
    m4 = resnetx50(fold=4)
    unit9 = m4.units[8]                      # reads output 3 (stage 1): two stages back, stride 4, 256 -> 1024
    assert m4.plan.sources[8] == 3 and unit9.shortcut[0].stride == (4, 4) and unit9.shortcut[0].in_channels == 256
    assert num_params(m) > num_params(resnetx50())


def test_children_read_like_a_resnet():
    m = resnetx18()
    assert [n for n, _ in m.named_children()] == ['conv1', 'bn1', 'act1', 'maxpool', 'stage1', 'stage2', 'stage3',
                                                  'stage4', 'global_pool', 'fc']
    assert isinstance(m.stage1, Stage) and isinstance(m.stage1[0], FoldUnit) and len(m.stage3) == 2
    assert m.num_features == 512 and m.feature_info[-1] == dict(num_chs=512, reduction=32, module='stage4')
    assert [n for n, _ in m.stage1[0].branch.named_children()] == ['conv1', 'bn1', 'act1', 'conv2', 'bn2']


def test_variants():
    for arch in (resnetx_mbconv, resnetx_fused):
        for fold in (1, 3):
            m = arch(fold=fold, num_classes=5)
            assert m(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    dw = [c for c in resnetx_mbconv().modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert dw and all(c.groups == c.in_channels for c in dw)


def test_deep_stem_and_avgpool_shortcut():
    m = resnetx18(stem='deep', shortcut='avgpool', fold=2, num_classes=3)
    assert isinstance(m.conv1, nn.Sequential) and len(m.conv1) == 3 and m.conv1[0][0].stride == (2, 2)
    # xresnet's stem: 3x3 convs 3->32->32->64; the last conv's norm and act are `bn1`, `act1`
    assert [c.out_channels for c in m.conv1.modules() if isinstance(c, nn.Conv2d)] == [32, 32, 64]
    proj = m.units[2].shortcut                     # unit 3 reads output 1 at fold 2: 64 ch, stride 2 -> 128
    assert isinstance(proj[0], nn.AvgPool2d) and proj[1].stride == (1, 1) and proj[1].in_channels == 64
    x = torch.randn(2, 3, 64, 64)
    m = randomise(m)
    with torch.no_grad(): assert (m.forward_features(x) - reference_forward(m, x, keep=True)[1][8]).abs().max() <= 1e-5


def test_timm_and_fastai_spellings():
    assert resnetx18(in_chans=1, num_classes=3)(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert resnetx18(c_in=1, n_out=3).cfg == resnetx18(in_chans=1, num_classes=3).cfg     # fastai's names are aliases
    with pytest.raises(ValueError, match='pass only `num_classes`'): resnetx18(n_out=3, num_classes=3)
    # the original ResNetX code's `num_nodes` (units per stage) is an alias of `num_units` (e.g. an older config.json)
    assert resnetx18(num_nodes=(1, 2, 1, 1)).cfg == resnetx18(num_units=(1, 2, 1, 1)).cfg
    assert resnetx18(num_nodes=(1, 2, 1, 1)).plan.n_units == 5
    with pytest.raises(ValueError, match='pass only `num_units`'): resnetx18(num_nodes=(1, 1, 1, 1), num_units=(1, 1, 1, 1))
    assert resnetx50(fold=2, start_id=5, end_id=10).plan.sources[4] == 3


def test_config_dict_yaml_overrides(tmp_path):
    (tmp_path / 'm.yaml').write_text('num_units: [2, 2]\nunit: basic\nwidths: [16, 32]\nstrides: [1, 2]\nfold: 2\n')
    cfg = ResNetXConfig.from_yaml(tmp_path / 'm.yaml', n_out=7)
    assert cfg.num_units == (2, 2) and cfg.fold == 2 and cfg.num_classes == 7
    m, m2 = ResNetX(cfg), ResNetX(cfg, fold=1)           # building twice works (the original code's frozen yacs node did not)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7) and m2.plan.fold == 1
    assert ResNetXConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown ResNetX config keys \['nope'\]"): ResNetXConfig.from_dict({'nope': 1})
    with pytest.raises(ValueError, match='`num_classes` must be an integer >= 0, got -1'): resnetx18(n_out=-1)
    with pytest.raises(ValueError, match='fold'): resnetx18(fold=0)


@pytest.mark.parametrize('text, message', [
    ('fold: 2.5', "`fold` must be an integer >= 1, got 2.5"),
    ('act: banana', "`act` must be None, an nn.Module class or one of"),
    ('widths: ["64", 128, 256, 512]', "`widths\\[0\\]` must be an integer >= 1, got '64'"),
    ('strides: [1, 0, 2, 2]', "`strides\\[1\\]` must be an integer >= 1, got 0"),
    ('unit: resnet', "`unit` must be one of"),
    ('drop_rate: 1.5', "`drop_rate` must be a number in \\[0, 1\\)"),
    ('fold: [2]', "`fold` must be an integer >= 1, got \\[2\\]"),
    ('fold: 16', "`fold` must be <= 15 for num_units=\\(3, 4, 6, 3\\)"),
    ('global_pool: mean', "`global_pool` must be one of"),
    ('num_units: 4', "`num_units` must be a non-empty list"),
])
def test_yaml_config_checked_when_read(tmp_path, text, message):
    (tmp_path / 'bad.yaml').write_text(text + '\n')
    with pytest.raises(ValueError, match=f"config file '.*bad.yaml': {message}"):
        ResNetXConfig.from_yaml(tmp_path / 'bad.yaml')


def test_largest_fold_is_named():
    with pytest.raises(ValueError, match=r'`fold` must be <= 7 for num_units=\(2, 2, 2, 2\).*got 8'): resnetx18(fold=8)
    assert resnetx18(fold=7).plan.fold == 7


def test_init_like_fastai():
    m = resnetx18(zero_init_last_bn=True)
    assert all(u.branch.bn2.weight.abs().sum() == 0 for u in m.units)
    conv = m.stage2[0].branch.conv1
    assert 0.8 < conv.weight.std().item() / (2 / (conv.in_channels * 9)) ** 0.5 < 1.2   # kaiming normal, fan_in


@pytest.mark.slow   # torch.compile: ~5 s
def test_compile_fullgraph_and_export():
    m = resnetx18(fold=2, num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    compiled = torch.compile(m, fullgraph=True, backend='aot_eager')
    with torch.no_grad(): assert torch.allclose(compiled(x), m(x), atol=1e-5)
    ep = torch.export.export(m, (x,))
    with torch.no_grad(): assert torch.allclose(ep.module()(x), m(x), atol=1e-5)
    body = torch.compile(nn.Sequential(*list(m.children())[:-2]), fullgraph=True, backend='aot_eager')
    with torch.no_grad(): assert torch.allclose(body(x), m.forward_features(x), atol=1e-5)   # the carry compiles too


def test_drop_path_grows_linearly_from_zero():
    "Stochastic depth: unit l of n drops its branch with rate drop_path_rate * (l-1)/(n-1); rate 0 is no module at all."
    m = resnetx18(drop_path_rate=0.35, fold=2)
    rates = [u.drop_path.drop_prob if isinstance(u.drop_path, DropPath) else 0. for u in m.units]
    assert rates == pytest.approx([0.35 * l / 7 for l in range(8)]) and isinstance(m.units[0].drop_path, nn.Identity)
    assert all(isinstance(u.drop_path, nn.Identity) for u in resnetx18().units)
    assert isinstance(FoldUnit(nn.Identity(), nn.Identity(), nn.ReLU()).drop_path, nn.Identity)   # default: none
    assert isinstance(FoldUnit(nn.Identity(), nn.Identity(), nn.ReLU(), 1e-3).drop_path, DropPath)


def test_a_one_unit_resnet():
    "The smallest ResNet, one unit: it builds and computes act(branch(stem) + shortcut(stem))."
    m = ResNetX(ResNetXConfig((1,), 'basic', (8,), strides=(1,), stem_width=8, num_classes=2)).eval()
    x = torch.randn(2, 3, 32, 32)
    stem, u = m.maxpool(m.act1(m.bn1(m.conv1(x)))), m.units[0]
    with torch.no_grad():
        assert torch.allclose(m.forward_features(x), u.act(u.branch(stem) + u.shortcut(stem)), atol=1e-6)
        assert m(x).shape == (2, 2)


def test_drop_rates_stop_short_of_one():
    "A rate of 1 drops everything: refused for both rates, while anything below it is taken."
    for name in ('drop_rate', 'drop_path_rate'):
        with pytest.raises(ValueError, match=rf"`{name}` must be a number in \[0, 1\), got 1"): resnetx18(**{name: 1})
        assert getattr(resnetx18(**{name: 0.999}).cfg, name) == 0.999
