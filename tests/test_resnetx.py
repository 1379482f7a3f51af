import pytest, torch, torchvision
from torch import nn
from fastai_resnetx import (ResNetX, ResNetXConfig, Stage, FoldUnit, resnetx18, resnetx34, resnetx50, resnetx101,
                            resnetx152, resnetx_mbconv, resnetx_fused, num_params)
from fastai_resnetx.model.weights import resnet_key


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


@pytest.mark.parametrize('ours, theirs', [(resnetx18, torchvision.models.resnet18), (resnetx50, torchvision.models.resnet50)])
def test_fold1_is_a_resnet(ours, theirs):
    torch.manual_seed(0)
    tv, m = theirs().eval(), ours().eval()
    for p in tv.parameters(): nn.init.normal_(p, 0, 0.05)  # weights that do not depend on init quirks
    for b in tv.buffers():
        if b.dtype.is_floating_point: b.uniform_(0.5, 1.5)
    copy_torchvision(m, tv)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert (m(x) - tv(x)).abs().max() <= 1e-4


@pytest.mark.parametrize('fold', [2, 3, 4])
def test_folds_forward_backward(fold):
    m = resnetx18(fold=fold, n_out=10)
    y = m(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 10)
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())   # every projection is on the path


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


def test_children_read_well():
    m = resnetx18()
    assert [n for n, _ in m.named_children()] == ['stem', 'stage1', 'stage2', 'stage3', 'stage4', 'head']
    assert isinstance(m.stage1, Stage) and isinstance(m.stage1[0], FoldUnit) and len(m.stage3) == 2
    assert m.num_features == 512 and m.feature_info[-1] == dict(num_chs=512, reduction=32, module='stage4')


def test_variants():
    for arch in (resnetx_mbconv, resnetx_fused):
        for fold in (1, 3):
            m = arch(fold=fold, n_out=5)
            assert m(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    dw = [c for c in resnetx_mbconv().modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert dw and all(c.groups == c.in_channels for c in dw)


def test_c_in_and_window():
    assert resnetx18(c_in=1, n_out=3)(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert resnetx50(fold=2, start_id=5, end_id=10).plan.sources[4] == 3


def test_config_dict_yaml_overrides(tmp_path):
    (tmp_path / 'm.yaml').write_text('num_nodes: [2, 2]\nunit: basic\nwidths: [16, 32]\nstrides: [1, 2]\nfold: 2\n')
    cfg = ResNetXConfig.from_yaml(tmp_path / 'm.yaml', n_out=7)
    assert cfg.num_nodes == (2, 2) and cfg.fold == 2 and cfg.n_out == 7
    m, m2 = ResNetX(cfg), ResNetX(cfg, fold=1)           # building twice works (the seed's frozen yacs node did not)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7) and m2.plan.fold == 1
    assert ResNetXConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown ResNetX config keys \['nope'\]"): ResNetXConfig.from_dict({'nope': 1})
    with pytest.raises(ValueError, match='n_out'): resnetx18(n_out=0)
    with pytest.raises(ValueError, match='fold'): resnetx18(fold=0)


def test_init_like_fastai():
    m = resnetx18(zero_init_last_bn=True)
    assert all(u.branch[-1][1].weight.abs().sum() == 0 for u in m.units)
    conv = m.stage2[0].branch[0][0]
    assert 0.8 < conv.weight.std().item() / (2 / (conv.in_channels * 9)) ** 0.5 < 1.2   # kaiming normal, fan_in


def test_compile_fullgraph_and_export():
    m = resnetx18(fold=2, n_out=4).eval()
    x = torch.randn(1, 3, 32, 32)
    compiled = torch.compile(m, fullgraph=True, backend='aot_eager')
    with torch.no_grad(): assert torch.allclose(compiled(x), m(x), atol=1e-5)
    ep = torch.export.export(m, (x,))
    with torch.no_grad(): assert torch.allclose(ep.module()(x), m(x), atol=1e-5)
