"Folding timm's and torchvision's ResNets: exact at fold 1 on every arch, wired by the plan and trainable at 2-3."
import re

import pytest, timm, torch, torchvision
from torch import nn

from fastai_resnetx import ResNetX, get_pred, num_params
from fastai_resnetx.model.family import fold_resnet
from conftest import randomise, reference_forward, skip_init

TIMM_ARCHS = timm.list_models(module='resnet')   # every arch of timm's resnet.py: a new one is covered automatically
TV_ARCHS = [n for n in torchvision.models.list_models(module=torchvision.models)
            if re.match(r'(resnet|resnext|wide_resnet)\d', n)]
QUICK = ['test_resnet', 'resnet10t', 'resnet18d', 'resnetaa34d', 'resnetblur18', 'tv:resnet18']   # the CI subset


def build(name:str, init:bool=False, **kwargs) -> nn.Module:
    "timm's arch `name` (torchvision's as 'tv:NAME'), seeded random weights (init skipped unless `init`), in eval mode."
    if init:
        torch.manual_seed(0)
        if name.startswith('tv:'): return torchvision.models.get_model(name[3:], weights=None, **kwargs).eval()
        return timm.create_model(name, pretrained=False, **kwargs).eval()
    with skip_init():
        if name.startswith('tv:'): model = torchvision.models.get_model(name[3:], weights=None, **kwargs)
        else: model = timm.create_model(name, pretrained=False, **kwargs)
    return randomise(model)


def check_exact(name:str, size:int=32):
    "At fold 1: the same parameters (the very tensors), the same count and logits within 1e-5."
    src = build(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): ref = src(x)
    params, n = {id(p) for p in src.parameters()}, num_params(src)
    m = fold_resnet(src)
    assert isinstance(m, ResNetX) and not m.training
    assert num_params(m) == n and {id(p) for p in m.parameters()} == params   # moved, not copied; nothing new
    with torch.no_grad(): out = m(x)
    assert torch.isfinite(ref).all() and ref.abs().max() > 1e-3   # a live network, not zeros
    assert (out - ref).abs().max() <= 1e-5, f'{name}: {(out - ref).abs().max()}'


def test_arch_lists():
    assert len(TIMM_ARCHS) >= 81 and len(TV_ARCHS) >= 9 and 'resnext50_32x4d' in TV_ARCHS


@pytest.mark.parametrize('name', QUICK)
def test_fold1_exact_quick(name): check_exact(name)


@pytest.mark.slow
@pytest.mark.parametrize('name', TIMM_ARCHS + [f'tv:{n}' for n in TV_ARCHS])
def test_fold1_exact_every_arch(name):
    "Every arch of timm's resnet.py and torchvision's ResNet builders (the lists iterate the libraries): exact at fold 1."
    check_exact(name)


# SE, ECA, ResNeXt groups, d stem + avg_down, anti-aliasing, GroupNorm, basic blocks, torchvision's ResNeXt
AVG_DOWN = ['seresnext26d_32x4d', 'ecaresnet26t', 'resnetaa34d']
QUICK_SAMPLE = ['seresnext26d_32x4d', 'ecaresnet26t', 'resnetaa34d', 'resnet18']
# the quick subset folds each kind at 2 (resnet18 at 3 too); the rest, and the 50-layer ones (> 5 s), are slow
SAMPLE = [*[(n, 2) for n in QUICK_SAMPLE], ('resnet18', 3),
          *[pytest.param(n, 3, marks=pytest.mark.slow) for n in QUICK_SAMPLE[:3]],
          *[pytest.param(n, f, marks=pytest.mark.slow) for n in ('resnet50_gn', 'tv:resnext50_32x4d') for f in (2, 3)]]

@pytest.mark.parametrize('name, fold', SAMPLE)
def test_folds_match_reference_and_train(name, fold):
    src = build(name, num_classes=3)
    m = fold_resnet(src, fold=fold).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert any(s < l - 1 for l, s in enumerate(m.plan.sources, start=1))
    with torch.no_grad(): assert (m(x) - reference_forward(m, x)).abs().max() <= 1e-5
    # the rule: a skip of the block's input shape uses the block's own downsample (or none); another shape a new
    # projection of the family's kind (avg-pool first for the 'd' variants), from the skip's channels
    blocks = [b for layer in (src.layer1, src.layer2, src.layer3, src.layer4) for b in layer]
    with torch.no_grad(): _, outs = reference_forward(m, x, keep=True)
    for l, (u, b) in enumerate(zip(m.units, blocks), start=1):
        s = get_pred(l, fold)
        if outs[s].shape == outs[l - 1].shape: assert u.shortcut is (b.downsample or u.shortcut) and (
            b.downsample is not None or isinstance(u.shortcut, nn.Identity))
        else:
            conv = next(c for c in u.shortcut if isinstance(c, nn.Conv2d))
            assert conv.in_channels == outs[s].shape[1] and conv.out_channels == outs[l].shape[1]
            stride = outs[s].shape[-1] // outs[l].shape[-1]
            pooled = isinstance(u.shortcut[0], nn.AvgPool2d)
            assert (pooled, conv.stride[0]) == ((stride > 1, 1) if name in AVG_DOWN else (False, stride))
    # training starts from the family's own init (the filled weights are for the numeric check), new projections ours
    m = fold_resnet(build(name, num_classes=3, init=True), fold=fold).train()
    opt, y = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), torch.tensor([0, 1])
    losses = []
    for _ in range(6):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses


# ---- by name, pretrained weights offline, and everything else on a folded family model

import json, os
from fastai.vision.all import vision_learner, create_body, DynamicUnet, load_learner, model_meta
from fastai_resnetx import arch_summary, arch_splitter, model_summary, folded, folded_arch
from fastai_resnetx.job.data import digits_dls


def test_timm_name_pretrained_from_a_file(tmp_path):
    "timm's loader reads the file the overlay names; at fold 1 the logits are timm's own resnet18's from that file."
    sd = build('resnet18').state_dict()
    torch.save(sd, tmp_path / 'r18.pth')
    overlay = dict(file=str(tmp_path / 'r18.pth'))
    ref = timm.create_model('resnet18', pretrained=True, pretrained_cfg_overlay=overlay).eval()
    m = timm.create_model('folded_resnet18.a1_in1k', pretrained=True, pretrained_cfg_overlay=overlay).eval()
    assert m.pretrained_cfg['architecture'] == 'folded_resnet18' and m.pretrained_cfg['tag'] == 'a1_in1k'
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): assert (m(x) - ref(x)).abs().max() <= 1e-5
    m2 = folded('resnet18.a1_in1k', fold=2, pretrained=True, pretrained_cfg_overlay=overlay)
    assert torch.equal(m2.stage3[1].branch.conv2.weight, sd['layer3.1.conv2.weight'])
    assert torch.equal(m2.stage2[0].shortcut[0].weight, sd['layer2.0.downsample.0.weight'])   # same-shape skip: its own


def test_torchvision_name_pretrained_from_the_hub_cache(tmp_path, monkeypatch):
    "torchvision's loader reads its torch hub cache (no download); the folded model computes torchvision's resnet18."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def no_download(*a, **k): raise AssertionError('tried to download')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    ref = build('tv:resnet18')
    torch.save(ref.state_dict(), tmp_path / 'hub' / 'checkpoints' / os.path.basename(url))
    m = folded('tv:resnet18', pretrained=True).eval()
    assert m.pretrained_cfg['tag'] == 'imagenet1k_v1' and m.pretrained_cfg['url'] == url
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): assert (m(x) - ref(x)).abs().max() <= 1e-5


def test_names_and_errors():
    assert len(timm.list_models('folded_*')) == len(TIMM_ARCHS) + len(TV_ARCHS)
    assert 'folded_seresnext50_32x4d.gluon_in1k' in timm.list_pretrained('folded_seresnext50_32x4d*')
    with pytest.raises(ValueError, match="`model` must be a built timm ResNet"): fold_resnet(torchvision.models.vgg11())
    with pytest.raises(ValueError, match='fold'): fold_resnet(timm.create_model('resnet18'), fold=8)   # 8 units
    with pytest.raises(ValueError, match="`name` must be a folded arch name"): folded_arch('resnet50')


@pytest.fixture(scope='module')
def dls():
    torch.manual_seed(0)
    return digits_dls(size=32, bs=16, n_items=64, augment=False)


def test_fastai_learner_groups_stats_export(dls, tmp_path):
    arch = folded_arch('folded_resnet18d', fold=2)
    learn = vision_learner(dls, arch, pretrained=False)
    assert model_meta[arch]['split'] is arch_splitter
    groups = learn.splitter(learn.model)
    body = learn.model[0]
    assert len(groups) >= 3 and {id(p) for p in groups[0]} >= {id(p) for p in body[0].parameters()}   # stem first
    assert {id(p) for p in groups[-1]} == {id(p) for p in learn.model[1].parameters()}                # head last
    src_cfg = timm.models.get_pretrained_cfg('resnet18d')   # the default weights' stats (fastai normalises pretrained)
    assert model_meta[arch]['stats'] == (list(src_cfg.mean), list(src_cfg.std))
    by_name = vision_learner(dls, 'folded_resnet18d', pretrained=False, fold=2)   # through timm, timm's stats
    assert len(by_name.splitter(by_name.model)) == len(groups)
    assert 'Total FLOPs per item' in learn.summary()   # fastai's table with our FLOPs column
    learn.fit(1, 1e-3)
    learn.export(tmp_path / 'l.pkl')
    back = load_learner(tmp_path / 'l.pkl')
    x = dls.one_batch()[0][:4].cpu()
    learn.model.eval()
    back.model.eval()
    with torch.no_grad(): assert torch.equal(learn.model(x), back.model(x))


def test_create_body_and_unet_see_the_stages():
    m = folded('resnet18', fold=3).eval()
    body = create_body(m, cut=-2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(body(x), m.forward_features(x))
        unet = DynamicUnet(body, n_out=2, img_size=(64, 64)).eval()
        assert unet(x).shape == (1, 2, 64, 64)


def test_timm_interface():
    m = timm.create_model('folded_seresnext26d_32x4d', fold=2, num_classes=4, drop_path_rate=0.1)
    assert abs(m.units[-1].drop_path.drop_prob - 0.1) < 1e-9 and isinstance(m.units[0].drop_path, nn.Identity)
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, feats = m.forward_intermediates(x)
        assert torch.equal(final, m.forward_features(x))
        assert [f.shape[1] for f in feats] == [i['num_chs'] for i in m.feature_info]
        assert [64 // f.shape[-1] for f in feats] == [i['reduction'] for i in m.feature_info]
        f = timm.create_model('folded_seresnext26d_32x4d', fold=2, features_only=True, out_indices=(1, 3)).eval()
        assert [o.shape[1] for o in f(x)] == [256, 1024]
    m.reset_classifier(7)
    assert m(x).shape == (2, 7)
    m.train()
    grads = []
    for ckpt in (False, True):
        m.set_grad_checkpointing(ckpt)
        torch.manual_seed(0)   # the same drop-path draws both times
        m.zero_grad()
        m(x).sum().backward()
        grads.append(m.stage2[1].branch.conv2.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_summaries_and_flops():
    src = build('resnet50d')
    n_flops = model_summary(src, input_size=(1, 3, 64, 64)).total_flops
    m = fold_resnet(src)
    assert model_summary(m, input_size=(1, 3, 64, 64)).total_flops == n_flops   # fold 1: the source's FLOPs
    text = str(arch_summary(m))
    assert all(n in text for n in ('conv1', 'stage1', 'stage4', 'global_pool', 'fc'))
    groups = arch_splitter(folded('resnet50d', fold=2))
    assert len(groups) >= 3


@pytest.mark.slow
def test_compile_and_export():
    m = folded('resnet18d', fold=2, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        assert torch.allclose(torch.compile(m, fullgraph=True)(x), ref, atol=1e-5)
        ep = torch.export.export(m, (x,))
        assert torch.allclose(ep.module()(x), ref, atol=1e-5)


@pytest.mark.slow   # ~2 s
def test_resnetx_train_command(tmp_path, capsys):
    "`resnetx train --arch folded_resnet10t --fold 2` through the front door (in process: test_cli runs the process)."
    from resnetx_cli import main
    from digit_folders import digit_folder
    data, out = digit_folder(tmp_path / 'data', n=12), tmp_path / 'run'
    code = main(['train', '--data', str(data), '--arch', 'folded_resnet10t', '--fold', '2', '--epochs', '1', '--size', '16',
                 '--bs', '8', '--precision', 'fp32', '--out', str(out)])
    assert code == 0, capsys.readouterr().err[-2000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['arch'] == 'folded_resnet10t' and metrics['fold'] == 2 and (out / 'export.pkl').is_file()
    assert load_learner(out / 'export.pkl').model[0][4].__class__.__name__ == 'Stage'


def test_fold1_runs_the_source_ops():
    "At fold 1 a training step runs the same aten ops in the same order as the source's: no extra work to be slower by."
    from torch.utils._python_dispatch import TorchDispatchMode
    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))
    x, runs = torch.randn(2, 3, 32, 32), []
    for m in (build('seresnext26d_32x4d').train(), fold_resnet(build('seresnext26d_32x4d')).train()):
        with Record() as r: m(x).logsumexp(1).sum().backward()
        runs.append(r.ops)
    assert len(runs[0]) > 500 and runs[0] == runs[1]


def test_folded_arch_takes_only_folded_names_and_their_entry_points():
    def folded_resnet18(): pass   # the name of an entry point, but another function
    for wrong in (folded_resnet18, 'resnet18', 'folded_nonexistent'):
        with pytest.raises(ValueError, match='`name` must be a folded arch name'): folded_arch(wrong)
    assert folded_arch('folded_resnet18', fold=2) is folded_arch(timm.models.model_entrypoint('folded_resnet18'), fold=2)
