import pytest, torch, timm
from torch import nn
from fastai.vision.all import vision_learner, load_learner, accuracy, set_seed, Callback, model_meta, Normalize
from fastai_resnetx import (resnetx18, resnetx50, resnetx_mbconv, RESNETX_ARCHS, resnetx_cut, arch_splitter, ResNetX,
                            create_resnetx)
from fastai_resnetx.job.data import digits_dls


@pytest.fixture(scope='module')
def tiny_dls():
    set_seed(0)
    return digits_dls(size=16, bs=32, n_items=320, augment=False)


class PeakLRs(Callback):
    "Record the largest LR each optimizer param group reaches (read from the optimizer's hyper-parameters)."
    def before_fit(self): self.peaks = [0.] * len(self.opt.hypers)
    def after_batch(self): self.peaks = [max(p, h['lr']) for p, h in zip(self.peaks, self.opt.hypers)]


def test_model_meta_for_every_arch():
    for arch in RESNETX_ARCHS:
        meta = model_meta[arch]
        assert meta['cut'] is resnetx_cut and meta['split'] is arch_splitter and len(meta['stats'][0]) == 3
    assert model_meta[resnetx50]['weights'] == 'DEFAULT' and 'weights' not in model_meta[resnetx_mbconv]


def test_vision_learner_groups_freeze_and_discriminative_lrs(tiny_dls):
    learn = vision_learner(tiny_dls, resnetx18, pretrained=False, metrics=accuracy)
    body = learn.model[0][0]
    assert isinstance(body, ResNetX) and isinstance(body.head, nn.Identity)
    assert learn.model[1][-1].out_features == 10                # fastai's head for dls.c classes
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
    learn.fit_one_cycle(1, slice(1e-5, 1e-3), cbs=rec)
    assert len(rec.peaks) == 3
    assert rec.peaks[2] == pytest.approx(1e-3, rel=0.05) and rec.peaks[1] == pytest.approx(1e-4, rel=0.05)
    assert rec.peaks[0] == pytest.approx(1e-5, rel=0.05)


def test_weights_path_and_pretrained_path(tiny_dls):
    # fastai calls arch(weights=...) when the meta has a `weights` key, else arch(pretrained=...)
    assert isinstance(resnetx50(weights=None), ResNetX) and isinstance(resnetx_mbconv(pretrained=False), ResNetX)
    learn = vision_learner(tiny_dls, resnetx_mbconv, pretrained=False)
    assert learn.model[0][0].cfg.unit == 'mbconv' and len(learn.splitter(learn.model)) == 3


def test_export_round_trip(tiny_dls, tmp_path):
    learn = vision_learner(tiny_dls, resnetx18, pretrained=False, path=tmp_path)
    learn.fit(1, 1e-3)
    learn.export('export.pkl')
    learn2 = load_learner(tmp_path / 'export.pkl')
    x = tiny_dls.valid.one_batch()[0][:4]
    learn.model.eval(); learn2.model.eval()
    with torch.no_grad(): assert torch.allclose(learn.model(x), learn2.model(x), atol=1e-6)


def test_bf16_autocast_and_channels_last():
    m = resnetx18(fold=2, n_out=4).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 4)
    y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_timm_registry_and_features():
    assert {'resnetx18', 'resnetx50', 'resnetx152', 'resnetx_mbconv', 'resnetx_fused'} <= set(timm.list_models('resnetx*'))
    m = timm.create_model('resnetx50', num_classes=10, fold=2)
    assert isinstance(m, ResNetX) and m.cfg.fold == 2 and m.pretrained_cfg['classifier'] == 'head.fc'
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert m.num_features == 2048 and m.get_classifier().out_features == 10
    m.reset_classifier(0)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 2048)
    assert m.forward_head(m.forward_features(torch.randn(2, 3, 32, 32)), pre_logits=True).shape == (2, 2048)
    f = timm.create_model('resnetx18', features_only=True, fold=3)
    assert f.feature_info.channels() == [64, 64, 128, 256, 512] and f.feature_info.reduction() == [4, 4, 8, 16, 32]
    assert [o.shape[1:] for o in f(torch.randn(1, 3, 64, 64))] == [(64, 16, 16), (64, 16, 16), (128, 8, 8),
                                                                   (256, 4, 4), (512, 2, 2)]
    g = timm.create_model('resnetx18').group_matcher()
    assert g['stem'] == '^stem'


def test_vision_learner_by_name(tiny_dls):
    learn = vision_learner(tiny_dls, 'resnetx18', pretrained=False)
    assert isinstance(learn.model[0].model, ResNetX)
    xb = tiny_dls.one_batch()[0]
    assert learn.model(xb).shape == (32, 10)


def test_bad_input():
    with pytest.raises(ValueError, match=r"`name` must be one of \[.*'resnetx50'"): create_resnetx('resnetx51')
    with pytest.raises(ValueError, match='`n_out` must be an integer >= 1, got 0'): resnetx18(n_out=0)
    with pytest.raises(RuntimeError, match='Unknown model'): timm.create_model('resnetx51')


def test_digits_end_to_end():
    "resnetx18 from scratch on scikit-learn's real digits (32px) reaches >= 95% validation accuracy on CPU."
    set_seed(42)
    dls = digits_dls(size=32, bs=64)
    learn = vision_learner(dls, resnetx18, pretrained=False, metrics=accuracy)
    with learn.no_bar(): learn.fit_one_cycle(3, 3e-3)
    acc = learn.validate()[1]
    print(f'digits accuracy after 3 epochs: {acc:.4f}')
    assert acc >= 0.95


@pytest.fixture
def cached_resnet18(tmp_path, monkeypatch):
    "torchvision's resnet18 DEFAULT weights (random values) in a temporary torch hub cache; the network refuses."
    import os, socket, torchvision
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    def refuse(*a, **k): raise AssertionError('network access attempted')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    with torch.no_grad():
        for p in tv.parameters(): p.normal_(0, 0.05)
    url = torchvision.models.get_model_weights('resnet18')['DEFAULT'].url
    path = tmp_path / 'torch' / 'hub' / 'checkpoints' / os.path.basename(url)
    path.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), path)
    return tv


def test_vision_learner_pretrained(tiny_dls, cached_resnet18):
    dls = digits_dls(size=16, bs=32, n_items=320, augment=False)   # own dls: vision_learner adds Normalize to it
    learn = vision_learner(dls, resnetx18, pretrained=True)
    body = learn.model[0][0]
    assert torch.equal(body.stem[0].weight, cached_resnet18.conv1.weight)           # weights loaded from the cache
    assert torch.equal(body.stage4[1].branch[1][0].weight, cached_resnet18.layer4[1].conv2.weight)
    norm = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norm) == 1 and torch.allclose(norm[0].mean.flatten().cpu(), torch.tensor([0.485, 0.456, 0.406]))
    groups = learn.splitter(learn.model)
    assert len(groups) == 3 and learn.opt.frozen_idx == 2                          # vision_learner froze it
    norm_ids = {id(p) for m in learn.model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert all(not p.requires_grad or id(p) in norm_ids for g in groups[:2] for p in g)
    assert all(p.requires_grad for p in groups[2])


def test_vision_learner_pretrained_grayscale(cached_resnet18):
    dls = digits_dls(size=16, bs=32, n_items=320, augment=False, bw=True)
    learn = vision_learner(dls, resnetx18, pretrained=True, n_in=1)
    conv = learn.model[0][0].stem[0]
    assert conv.in_channels == 1                                                    # fastai adapted the first conv
    assert torch.allclose(conv.weight, cached_resnet18.conv1.weight.sum(1, keepdim=True))
    assert learn.model(dls.one_batch()[0]).shape == (32, 10)
