"ResNetX through fastai's own entry points: `create_body`, `vision_learner` (entry point, partial, timm name), `load_learner`."
from functools import partial

import pytest, torch, timm
from torch import nn
from fastai.vision.all import (vision_learner, create_body, load_learner, accuracy, Callback, model_meta,
                               Normalize, imagenet_stats)
from fastai.vision.learner import default_split
from fastai_resnetx import (resnetx18, resnetx50, resnetx_mbconv, RESNETX_ARCHS, resnetx_arch, arch_splitter, arch_groups,
                            ResNetX, Stage, create_resnetx)
from fastai_resnetx.job.data import digits_dls
from conftest import randomise


class PeakLRs(Callback):
    "Record the largest LR each optimizer param group reaches (read from the optimizer's hyper-parameters)."
    def before_fit(self): self.peaks = [0.] * len(self.opt.hypers)
    def after_batch(self): self.peaks = [max(p, h['lr']) for p, h in zip(self.peaks, self.opt.hypers)]


def n_params(groups): return [sum(p.numel() for p in g) for g in groups]


def test_model_meta_for_every_arch_by_function_and_by_name():
    for arch in RESNETX_ARCHS:
        meta = model_meta[arch]
        assert meta['cut'] == -2 and meta['split'] is arch_splitter and meta['stats'] == imagenet_stats
        assert model_meta[arch.__name__] is meta        # `vision_learner(dls, 'resnetx50')` looks up the string
    assert model_meta[resnetx50]['weights'] == 'DEFAULT' and 'weights' not in model_meta[resnetx_mbconv]


@pytest.mark.parametrize('fold', [1, 3])
def test_create_body_with_fastais_default_cut(fold):
    model = resnetx50(fold=fold).eval()
    body = create_body(model, pretrained=False)      # fastai's default cut: before the last child with a pooling layer
    assert [type(m) for m in body][:4] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert [type(m) for m in body][4:] == [Stage] * 4 and len(body) == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(body(x), model.forward_features(x), rtol=0, atol=0)


def test_create_body_n_in_adapts_first_conv_and_cfg():
    model = resnetx18(fold=2)
    body = create_body(model, n_in=1, pretrained=False)
    assert body[0].in_channels == 1 and model.conv1 is body[0]
    assert model.cfg.in_chans == 1                   # the config reports what the first conv really takes
    assert body(torch.randn(2, 1, 32, 32)).shape == (2, 512, 1, 1)


@pytest.mark.slow
def test_vision_learner_groups_freeze_and_discriminative_lrs(digits16):
    learn = vision_learner(digits16, resnetx18, pretrained=False, metrics=accuracy)
    body = learn.model[0]                            # fastai's Sequential of the stem layers and stages
    assert isinstance(body[0], nn.Conv2d) and all(isinstance(m, Stage) for m in body[4:]) and len(body) == 8
    assert learn.model[1][-1].out_features == 10     # fastai's head for dls.c classes
    groups = learn.splitter(learn.model)
    assert len(groups) == 3
    assert sum(len(g) for g in groups) == len(list(learn.model.parameters()))
    learn.freeze()
    frozen = [p for g in groups[:-1] for p in g if p.requires_grad]
    norm_params = {id(p) for m in learn.model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert all(id(p) in norm_params for p in frozen)            # only norm layers stay trainable (train_bn)
    assert all(p.requires_grad for p in groups[-1])
    learn.unfreeze()
    rec = PeakLRs()
    with learn.no_bar(): learn.fit_one_cycle(1, slice(1e-5, 1e-3), cbs=rec)
    assert len(rec.peaks) == 3
    assert rec.peaks[2] == pytest.approx(1e-3, rel=0.05) and rec.peaks[1] == pytest.approx(1e-4, rel=0.05)
    assert rec.peaks[0] == pytest.approx(1e-5, rel=0.05)


def test_by_name_gets_the_same_groups_as_the_entry_point(digits16):
    by_fn = vision_learner(digits16, resnetx18, pretrained=False)
    by_name = vision_learner(digits16, 'resnetx18', pretrained=False)      # built by timm: Sequential(TimmBody, head)
    assert isinstance(by_name.model[0].model, ResNetX)
    assert by_name.splitter is arch_splitter
    assert [g.role for g in arch_groups(by_name.model)] == ['stem + stages 1-2', 'stages 3-4', 'head']
    assert n_params(by_name.splitter(by_name.model)) == n_params(by_fn.splitter(by_fn.model))
    xb = digits16.one_batch()[0]
    assert by_name.model(xb).shape == (len(xb), 10)
    folded = vision_learner(digits16, 'resnetx18', pretrained=False, fold=3)    # config keywords go through timm
    assert folded.model[0].model.cfg.fold == 3


@pytest.mark.slow
def test_partial_and_resnetx_arch(digits16):
    learn = vision_learner(digits16, partial(resnetx18, fold=2), pretrained=False)   # fastai's defaults: no model_meta
    assert learn.splitter is default_split and all(isinstance(m, Stage) for m in learn.model[0][4:])
    with learn.no_bar(): learn.fit(1, 1e-3)
    n = len(model_meta)   # a configuration no other test registers (tests share a process under xdist)
    archs = [resnetx_arch('resnetx18', fold=2, start_id=3) for _ in range(3)] + [resnetx_arch(resnetx18, fold=2, start_id=3)]
    assert len(model_meta) == n + 1 and all(a is archs[0] for a in archs)   # one entry per configuration
    assert resnetx_arch('resnetx18', fold=1) is resnetx18 and resnetx_arch('resnetx18', fold=2) is not archs[0]
    learn = vision_learner(digits16, archs[0], pretrained=False)
    assert learn.splitter is arch_splitter and len(learn.splitter(learn.model)) == 3
    assert n_params(learn.splitter(learn.model))[0] > n_params(arch_splitter(vision_learner(digits16, resnetx18, pretrained=False).model))[0]   # fold 2: extra projections
    with pytest.raises(ValueError, match='`fold` must be an integer >= 1, got 0'): resnetx_arch('resnetx18', fold=0)
    with pytest.raises(ValueError, match=r"`name` must be one of \[.*'resnetx18'"): resnetx_arch('resnet18')


def test_input_channels_through_fastai(digits16):
    dls = digits_dls(size=16, bs=32, n_items=320, augment=False, bw=True)
    learn = vision_learner(dls, 'resnetx18', pretrained=False, n_in=1)     # timm builds it with in_chans=n_in
    assert learn.model[0].model.cfg.in_chans == 1 and learn.model(dls.one_batch()[0]).shape == (32, 10)
    learn = vision_learner(dls, resnetx18, pretrained=False, n_in=1)       # fastai swaps the first conv
    assert learn.model[0][0].in_channels == 1 and learn.model(dls.one_batch()[0]).shape == (32, 10)
    # `c_in`/`in_chans` are the model's spellings: a fastai path says so instead of building something else
    with pytest.raises(TypeError, match='c_in'): vision_learner(digits16, resnetx18, pretrained=False, c_in=1)
    with pytest.raises(ValueError, match='c_in'): vision_learner(digits16, 'resnetx18', pretrained=False, c_in=1)
    with pytest.raises(TypeError, match='in_chans'): vision_learner(digits16, 'resnetx18', pretrained=False, in_chans=1)
    for key in ('c_in', 'in_chans'):
        with pytest.raises(ValueError, match=f"`{key}` .* pass fastai's `n_in=`"): resnetx_arch('resnetx18', **{key: 1})


def test_weights_path_and_pretrained_path(digits16):
    # fastai calls arch(weights=...) when the meta has a `weights` key, else arch(pretrained=...)
    assert isinstance(resnetx50(weights=None), ResNetX) and isinstance(resnetx_mbconv(pretrained=False), ResNetX)
    learn = vision_learner(digits16, resnetx_mbconv, pretrained=False)
    assert type(learn.model[0][4][0].branch).__name__ == 'MBConv' and len(learn.splitter(learn.model)) == 3


@pytest.mark.slow
@pytest.mark.parametrize('arch', [resnetx18, partial(resnetx18, fold=2)], ids=['entry_point', 'partial'])
def test_export_round_trip(digits16, tmp_path, arch):
    learn = vision_learner(digits16, arch, pretrained=False, path=tmp_path)
    with learn.no_bar(): learn.fit(1, 1e-3)
    learn.export('export.pkl')
    learn2 = load_learner(tmp_path / 'export.pkl')
    x = digits16.valid.one_batch()[0][:4]
    learn.model.eval(); learn2.model.eval()
    with torch.no_grad(): torch.testing.assert_close(learn.model(x), learn2.model(x), rtol=0, atol=1e-6)


def test_bf16_autocast_and_channels_last():
    m = resnetx18(fold=2, num_classes=4).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 4)
    y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_timm_registry():
    assert {'resnetx18', 'resnetx50', 'resnetx152', 'resnetx_mbconv', 'resnetx_fused'} <= set(timm.list_models('resnetx*'))
    m = timm.create_model('resnetx50', num_classes=10, fold=2)
    assert isinstance(m, ResNetX) and m.cfg.fold == 2 and m.get_classifier().out_features == 10
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_input():
    with pytest.raises(ValueError, match=r"`name` must be one of \[.*'resnetx50'"): create_resnetx('resnetx51')
    with pytest.raises(ValueError, match='`fold` must be an integer >= 1, got 0'): resnetx18(fold=0)
    with pytest.raises(RuntimeError, match='Unknown model'): timm.create_model('resnetx51')


@pytest.fixture
def cached_resnet18(tmp_path, monkeypatch):
    "torchvision's resnet18 DEFAULT weights (random values) in a temporary torch hub cache."
    import os, torchvision
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    tv = randomise(torchvision.models.resnet18())
    url = torchvision.models.get_model_weights('resnet18')['DEFAULT'].url
    path = tmp_path / 'torch' / 'hub' / 'checkpoints' / os.path.basename(url)
    path.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), path)
    return tv


def check_pretrained_learner(learn, dls, tv, body):
    "Weights from the cache, ImageNet normalization added to `dls`, frozen but for the head (and norms)."
    assert torch.equal(body.conv1.weight if hasattr(body, 'conv1') else body[0].weight, tv.conv1.weight)
    stage4 = body.stage4 if hasattr(body, 'stage4') else body[7]
    assert torch.equal(stage4[1].branch.conv2.weight, tv.layer4[1].conv2.weight)
    norm = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norm) == 1 and torch.allclose(norm[0].mean.flatten().cpu(), torch.tensor([0.485, 0.456, 0.406]))
    groups = learn.splitter(learn.model)
    assert len(groups) == 3 and learn.opt.frozen_idx == 2                          # the learner froze it
    norm_ids = {id(p) for m in learn.model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert all(not p.requires_grad or id(p) in norm_ids for g in groups[:2] for p in g)
    assert all(p.requires_grad for p in groups[2])


def test_vision_learner_pretrained(cached_resnet18):
    dls = digits_dls(size=16, bs=32, n_items=320, augment=False)   # own dls: vision_learner adds Normalize to it
    learn = vision_learner(dls, resnetx18, pretrained=True)
    check_pretrained_learner(learn, dls, cached_resnet18, learn.model[0])


def test_vision_learner_pretrained_by_name(cached_resnet18):
    "By its timm name: the same weights, the same stats, the same frozen groups as the entry point."
    dls = digits_dls(size=16, bs=32, n_items=320, augment=False)
    learn = vision_learner(dls, 'resnetx18', pretrained=True)
    check_pretrained_learner(learn, dls, cached_resnet18, learn.model[0].model)


def test_vision_learner_pretrained_grayscale(cached_resnet18):
    dls = digits_dls(size=16, bs=32, n_items=320, augment=False, bw=True)
    learn = vision_learner(dls, resnetx18, pretrained=True, n_in=1)
    conv = learn.model[0][0]
    assert conv.in_channels == 1                                                    # fastai adapted the first conv
    assert torch.allclose(conv.weight, cached_resnet18.conv1.weight.sum(1, keepdim=True))
    assert learn.model(dls.one_batch()[0]).shape == (32, 10)


def test_resnetx_arch_takes_only_our_names_and_entry_points():
    def resnetx18(): pass   # an arch's name, but another function: fastai would build something else
    for wrong in (resnetx18, 'resnet18', 'resnetx19'):
        with pytest.raises(ValueError, match='`name` must be one of'): resnetx_arch(wrong)
    assert resnetx_arch('resnetx18', fold=2) is resnetx_arch(RESNETX_ARCHS[0], fold=2)
