"What timm's train.py passes to a model, on a ResNetX, checked against independent references."
import copy

import pytest, timm, torch, torch.nn.functional as F, torchvision
from torch import nn
import fastai_resnetx
from fastai_resnetx import ResNetX, resnetx18


def test_one_entry_point_per_arch():
    for arch in fastai_resnetx.RESNETX_ARCHS:
        assert timm.models.model_entrypoint(arch.__name__) is arch is getattr(fastai_resnetx, arch.__name__)
    assert 'resnetx50' in timm.list_models(module='archs')         # what timm's tests select models by
    m = timm.create_model('resnetx18', num_classes=7, in_chans=1, drop_rate=0.2, global_pool='max', fold=2, start_id=2)
    same = resnetx18(n_out=7, c_in=1, drop=0.2, global_pool='max', fold=2, start_id=2)   # fastai's spellings, accepted
    assert m.cfg == same.cfg and (m.num_classes, m.in_chans, m.drop_rate) == (7, 1, 0.2)
    with pytest.raises(TypeError, match=r"unknown ResNetX config keys \['not_an_arg'\]"): timm.create_model('resnetx18', not_an_arg=1)


def test_drop_path_grows_with_depth_and_is_identity_in_eval():
    m = timm.create_model('resnetx18', drop_path_rate=0.1, fold=2)
    rates = [u.drop_path.drop_prob if hasattr(u.drop_path, 'drop_prob') else 0. for u in m.units]
    assert rates == pytest.approx([0.1 * i / 7 for i in range(8)])           # timm's ResNet rule: 0 at the first unit
    plain = resnetx18(fold=2); plain.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert torch.equal(m.eval()(x), plain.eval()(x))
    m = timm.create_model('resnetx18', drop_path_rate=0.5, fold=2).train()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad(): torch.manual_seed(0); a = m(x); torch.manual_seed(1); b = m(x); torch.manual_seed(0); c = m(x)
    assert not torch.equal(a, b) and torch.equal(a, c)                         # stochastic depth is on in training


def test_global_pool_types_and_reset_classifier():
    m = timm.create_model('resnetx18', fold=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        pools = {'avg': f.mean((2, 3)), 'max': f.amax((2, 3)), 'avgmax': 0.5 * (f.mean((2, 3)) + f.amax((2, 3))),
                 'catavgmax': torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)}
        for pool, ref in pools.items():
            m.reset_classifier(10, pool)
            assert torch.allclose(m.forward_head(f, pre_logits=True), ref, atol=1e-6) and m(x).shape == (2, 10), pool
            assert m.head_hidden_size == ref.shape[1]
            built = timm.create_model('resnetx18', fold=3, global_pool=pool, num_classes=0)
            built.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith('fc.')})
            assert torch.allclose(built.eval()(x), ref, atol=1e-5), pool
        m.reset_classifier(0, '')
        assert torch.equal(m(x), f) and m.num_classes == 0
        m.reset_classifier(5)                                                  # a classifier pools again
        assert m(x).shape == (2, 5)


def test_grad_checkpointing_gives_identical_gradients():
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        m = timm.create_model('resnetx18', fold=3, num_classes=4).train()
        m.set_grad_checkpointing(on)
        F.cross_entropy(m(x), torch.tensor([1, 3])).backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n, g in grads[0].items(): assert torch.allclose(g, grads[1][n], atol=1e-6), n


def test_prune_and_intermediates_match_torchvision_at_fold1():
    tv = torchvision.models.resnet18().eval()
    m = resnetx18(); m.load_state_dict({k: v for k, v in zip(m.state_dict(), tv.state_dict().values())})
    m.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stem = tv.relu(tv.bn1(tv.conv1(x))); refs = [stem]; y = tv.maxpool(stem)
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4): y = layer(y); refs.append(y)
        final, taps = m.forward_intermediates(x)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(taps, refs)) and torch.allclose(final, refs[-1], atol=1e-5)
        assert [t.shape[1] for t in taps] == [i['num_chs'] for i in m.feature_info]
        p = copy.deepcopy(m); kept = p.prune_intermediate_layers([2])
        assert kept == [2] and p.stage_names == ['stage1', 'stage2'] and p.num_features == 128 and isinstance(p.fc, nn.Identity)
        assert torch.allclose(p.forward_features(x), refs[2], atol=1e-5)
        p = copy.deepcopy(m); p.prune_intermediate_layers([0])                 # to the stem: its max-pool goes too
        assert torch.allclose(p.forward_features(x), refs[0], atol=1e-5)
