"""A folded ResNetX under everything a user wraps around a stage: the same logits and gradients as the plain model, or
a `CarryError`; never a plausible wrong number. Models here have the named archs' layouts with tiny widths: the stage
wiring depends on the layout and the fold window only."""
import pytest, torch
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential
from fastai.callback.hook import hook_outputs
from fastai.torch_core import TensorImage

from fastai_resnetx import ResNetX, ResNetXConfig, resnetx18, skip_source
from fastai_resnetx.model.resnetx import CARRY, CarryError
from conftest import randomise

LAYOUTS = {'resnetx18': (2, 2, 2, 2), 'resnetx34/50': (3, 4, 6, 3), 'resnetx101': (3, 4, 23, 3),
           'resnetx152': (3, 8, 36, 3), 'resnetx_mbconv/fused': (2, 3, 4, 2)}


def tiny(num_units, fold=1, start_id=None, end_id=None):
    "A ResNetX with this layout and fold window, 4-7 channels wide, in eval mode."
    torch.manual_seed(0)
    cfg = ResNetXConfig(num_units, 'basic', (4, 5, 6, 7), stem_width=4, fold=fold, start_id=start_id, end_id=end_id,
                        num_classes=3)
    return randomise(ResNetX(cfg))   # norm statistics off 0/1, so that a wrong skip shows in the logits


def crossings(num_units, fold) -> frozenset:
    "The stage wiring of a fold: each (stage of a unit, stage its skip reads) pair (0: the stem)."
    stage = [0, *(i for i, n in enumerate(num_units, start=1) for _ in range(n))]   # the stage of each output
    return frozenset((stage[l], stage[skip_source(l, fold)]) for l in range(1, sum(num_units) + 1))


def windows(num_units):
    "The smallest and largest fold of each distinct stage wiring the layout allows, and a few custom windows."
    total, first, last = sum(num_units), {}, {}
    for f in range(1, total):
        first.setdefault(crossings(num_units, f), f)
        last[crossings(num_units, f)] = f
    yield from ((f, None, None) for f in sorted({*first.values(), *last.values()}))
    yield from [(3, 4, None), (2, 3, total - 1), (4, 5, total - 2), (3, total - 3, None)]


def plain(m, x): return m(x)

def _hooked(hook, pre=False):
    def run(m, x):
        hs = [s.register_forward_pre_hook(hook) if pre else s.register_forward_hook(hook) for s in m.stages]
        try: return m(x)
        finally:
            for h in hs: h.remove()
    return run

def full_backward_hook(m, x):
    seen = []
    hs = [s.register_full_backward_hook(lambda mod, gi, go: seen.append(go[0].shape)) for s in m.stages]
    try: return m(x)
    finally:
        for h in hs: h.remove()

def checkpoint_each_stage(m, x):
    f = m.forward_stem(x)
    for s in m.stages: f = checkpoint(s, f, use_reentrant=False)
    return m.forward_head(f)

def sequential_body(m, x): return m.forward_head(nn.Sequential(*list(m.children())[:-2])(x))

def reentrant_checkpoint_sequential(m, x):
    return m.forward_head(checkpoint_sequential(nn.Sequential(*m.stages), 2, m.forward_stem(x), use_reentrant=True))

WRAPPERS = {
    'plain': plain,
    'forward hook returns o.clone()': _hooked(lambda mod, i, o: o.clone()),
    'forward hook returns o * 1': _hooked(lambda mod, i, o: o * 1),
    'forward hook returns channels_last': _hooked(lambda mod, i, o: o.contiguous(memory_format=torch.channels_last)),
    'forward pre-hook returns a clone': _hooked(lambda mod, i: (i[0].clone(),), pre=True),
    'full backward hook': full_backward_hook,
    'checkpoint around each stage': checkpoint_each_stage,
    'nn.Sequential of the children': sequential_body,
    'reentrant checkpoint_sequential': reentrant_checkpoint_sequential,   # the one that may raise
}


def logits_and_grads(m, x, wrapper):
    m.zero_grad()
    out = wrapper(m, x)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in m.parameters()]


def close(a, b, tol=1e-4):
    "Equal up to float rounding, relative to the largest value (memory layouts change the order of sums)."
    return (a - b).abs().max() <= tol * b.abs().max() + 1e-6


def check_all_wrappers(num_units, fold, start_id, end_id):
    m = tiny(num_units, fold, start_id, end_id)
    x = torch.randn(2, 3, 32, 32, requires_grad=False)
    ref, ref_grads = logits_and_grads(m, x, plain)
    for name, wrapper in WRAPPERS.items():
        try: out, grads = logits_and_grads(m, x, wrapper)
        except CarryError:
            assert name == 'reentrant checkpoint_sequential', (num_units, fold, start_id, name)
            continue
        where = (num_units, fold, start_id, end_id, name)
        assert close(out, ref), where
        for g, r in zip(grads, ref_grads): assert close(g, r), where
    # a hook that cuts the graph on purpose: the logits still equal the plain model's
    with torch.no_grad(): assert close(_hooked(lambda mod, i, o: o.detach().requires_grad_())(m, x), ref)


@pytest.mark.parametrize('fold,start_id,end_id', list(windows((2, 2, 2, 2))))
def test_resnetx18_layout_under_every_wrapper(fold, start_id, end_id):
    check_all_wrappers((2, 2, 2, 2), fold, start_id, end_id)


@pytest.mark.slow
@pytest.mark.parametrize('layout,fold,start_id,end_id',
                         [(k, *w) for k, layout in LAYOUTS.items() if k != 'resnetx18' for w in windows(layout)])
def test_every_layout_and_fold_under_every_wrapper(layout, fold, start_id, end_id):
    check_all_wrappers(LAYOUTS[layout], fold, start_id, end_id)


def test_fold4_clone_hook_was_silently_wrong_and_is_now_exact():
    "The case found in review: at fold 4, stage2 reads nothing earlier but must pass stage1's outputs on."
    m = tiny((2, 2, 2, 2), fold=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        h = m.stage1.register_forward_hook(lambda mod, i, o: o.clone())
        assert torch.equal(m(x), ref)
        h.remove()


@pytest.mark.parametrize('fold', [2, 3, 4, 5, 6])
def test_a_stage_alone_on_a_bare_tensor(fold):
    "Each stage that needs earlier outputs raises on a bare tensor; the others compute what they do in the model."
    m = tiny((2, 2, 2, 2), fold=fold)
    feats = [m.forward_stem(torch.randn(1, 3, 32, 32))]
    with torch.no_grad():
        for s in m.stages: feats.append(s(feats[-1]))
        for i, s in enumerate(m.stages):
            starts = 2 * i   # the stage's input is output 2*i; it needs outputs before it read by it or later units
            needs = any(skip_source(l, fold) < starts for l in range(starts + 1, 9))
            bare = feats[i].clone()   # the same values without the earlier outputs
            if needs:
                with pytest.raises(CarryError, match=f'stage{i + 1} .* needs outputs'): s(bare)
            else: assert torch.equal(s(bare), feats[i + 1])


def test_a_module_inserted_between_stages_is_an_error():
    m = tiny((2, 2, 2, 2), fold=2)
    body = nn.Sequential(*list(m.children())[:5], nn.ReLU(), *list(m.children())[5:-2])   # same values, new tensor
    with pytest.raises(CarryError, match='stage2'): body(torch.randn(1, 3, 32, 32))


def needed_outputs(num_units, fold, stage):
    "Outputs up to the end of `stage` that a unit of a later stage reads (by the fold rule, not the model)."
    hi, total = sum(num_units[:stage]), sum(num_units)
    return sorted({skip_source(l, fold) for l in range(hi + 1, total + 1)} - {hi} & set(range(hi)))


def reachable(t, seen=None):
    "Tensors reachable from `t` through carries (identity-distinct), not counting `t`."
    seen = {} if seen is None else seen
    carry = getattr(t, CARRY, None)
    for s in (carry[2] if carry else ()):
        if s is not None and id(s) not in seen: seen[id(s)] = s; reachable(s, seen)
    return seen


@pytest.mark.parametrize('fold', [2, 3, 4])
def test_a_carry_holds_only_what_later_stages_read(fold):
    m = tiny((2, 2, 2, 2), fold=fold)
    x = m.forward_stem(torch.randn(1, 3, 32, 32))
    outputs = [x]   # output 0 is the stem's, output l unit l's
    hooks = [u.register_forward_hook(lambda mod, i, o: outputs.append(o)) for u in m.units]
    with torch.no_grad():
        for stage, s in enumerate(m.stages, start=1):
            x = s(x)
            held = reachable(x)
            want = needed_outputs((2, 2, 2, 2), fold, stage)
            assert len(held) == len(want), (stage, len(held), want)
            for o in want:   # the same values as the outputs the units produced
                assert any(torch.equal(h, outputs[o]) for h in held.values()), (stage, o)
            assert all(getattr(h, CARRY, None) is None for h in held.values())   # carries never nest
    for h in hooks: h.remove()


def test_fastai_tensors_do_not_drag_carries_into_the_logits():
    "fastai's TensorBase copies attributes onto every result: the logits and the last feature map hold no carry."
    m = tiny((2, 2, 2, 2), fold=3)
    xb = TensorImage(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        out, feats = m(xb), m.forward_features(xb)
        ref = m(torch.randn(2, 3, 32, 32).copy_(xb))
    assert getattr(out, CARRY, None) is None and getattr(feats, CARRY, None) is None
    assert torch.allclose(out, ref, atol=1e-6)
    taps = m.forward_intermediates(torch.randn(1, 3, 32, 32), intermediates_only=True)
    assert [getattr(t, CARRY, None) for t in taps] == [None] * 5   # the caller's taps keep nothing else alive


def test_reentrant_checkpointing_is_an_error_not_wrong_gradients():
    m = tiny((2, 2, 2, 2), fold=2).train()
    f = m.forward_stem(torch.randn(2, 3, 32, 32))
    with pytest.raises(CarryError, match='use_reentrant=False'):
        checkpoint_sequential(nn.Sequential(*m.stages), 2, f, use_reentrant=True)
    out = checkpoint_sequential(nn.Sequential(*m.stages), 2, f, use_reentrant=False)   # the way that works
    assert torch.allclose(out, nn.Sequential(*m.stages)(f), atol=1e-6)


def test_fastai_hook_outputs_see_each_stage_at_fold_3():
    m = tiny((2, 2, 2, 2), fold=3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f, ref = m.forward_stem(x), []
        for s in m.stages: f = s(f); ref.append(f.clone())
        with hook_outputs(m.stages, detach=False) as h: logits = m(x)
    assert all(torch.equal(a, b) for a, b in zip(h.stored, ref)) and torch.equal(logits, m(x))


def hand_grad_cam(m, layer, x, target):
    "Grad-CAM from the layer's activation and its gradient, by hand: sum_c mean_hw(dy/dA_c) * A_c."
    acts = []
    h = layer.register_forward_hook(lambda mod, i, o: acts.append(o))
    y = m(x)[:, target].sum()
    h.remove()
    grad, = torch.autograd.grad(y, acts[0])
    return (grad.mean((2, 3), keepdim=True) * acts[0]).sum(1, keepdim=True)


def test_captum_layer_grad_cam_on_a_stage_at_fold_2():
    from captum.attr import LayerGradCam, LayerActivation
    torch.manual_seed(0)
    m = resnetx18(fold=2, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    for stage in (m.stage2, m.stage3):
        cam = LayerGradCam(m, stage).attribute(x, target=3)
        assert cam.shape[1] == 1 and torch.allclose(cam, hand_grad_cam(m, stage, x, 3), atol=1e-5)
    act = LayerActivation(m, m.stage3).attribute(x)
    with torch.no_grad(): assert torch.allclose(act, m.stage3(m.stage2(m.stage1(m.forward_stem(x)))), atol=1e-6)


def test_scripting_says_what_works_and_tracing_works():
    m = tiny((2, 2, 2, 2), fold=3)
    with pytest.raises(RuntimeError, match=r'torch.jit.script cannot compile a ResNetX.*torch.jit.trace.*torch.export'):
        torch.jit.script(m)
    import timm
    from fastai.vision.all import create_body
    for body in (create_body(m), create_body(timm.create_model('folded_resnet10t', fold=2)), create_body(tiny((1, 1, 1, 1)))):
        with pytest.raises(RuntimeError, match=r'torch.jit.script cannot compile a ResNetX or its stages.*torch.jit.trace'):
            torch.jit.script(body)                                              # fastai's body: the stages say it too
    x = torch.randn(1, 3, 32, 32)
    traced = torch.jit.trace(m, x)
    x2 = torch.randn(3, 3, 32, 32)
    with torch.no_grad(): assert close(traced(x2), m(x2))


def test_a_folded_timm_resnet_under_the_same_wrappers():
    "Folded foreign ResNets are built of the same stages: the same guarantees hold for them."
    import timm
    from fastai_resnetx.model.family import fold_resnet
    torch.manual_seed(0)
    m = fold_resnet(timm.create_model('resnet18', num_classes=3), fold=3).eval()
    x = torch.randn(2, 3, 32, 32)
    ref, ref_grads = logits_and_grads(m, x, plain)
    for name in ('forward hook returns o.clone()', 'full backward hook', 'checkpoint around each stage'):
        out, grads = logits_and_grads(m, x, WRAPPERS[name])
        assert close(out, ref) and all(close(g, r) for g, r in zip(grads, ref_grads)), name
    with pytest.raises(CarryError): reentrant_checkpoint_sequential(m, x)


def test_a_frozen_prefix_under_no_grad_is_refused_and_requires_grad_false_works():
    "A prefix under no_grad then the rest with grad is refused at fold > 1 (reentrant checkpointing looks the same)."
    m = tiny((2, 2, 2, 2), fold=3)
    x = torch.randn(2, 3, 32, 32)
    ref = m(x)
    with torch.no_grad(): f = m.stage1(m.forward_stem(x))
    with pytest.raises(CarryError, match=r'requires_grad_\(False\)'): m.stage4(m.stage3(m.stage2(f)))
    for layer in [m.conv1, m.bn1, m.stage1]: layer.requires_grad_(False)
    out = m(x)
    out.square().sum().backward()
    assert close(out, ref) and m.stage1[0].branch.conv1.weight.grad is None
    assert m.stage4[0].branch.conv1.weight.grad.abs().sum() > 0
    m.requires_grad_(False)   # nothing needs gradients: the same prefix under no_grad is fine, whatever the grad mode
    with torch.no_grad(): f = m.stage1(m.forward_stem(x))
    assert close(m.forward_head(m.stage4(m.stage3(m.stage2(f)))), ref)


def test_grad_checkpointing_recomputes_each_unit_with_the_same_gradients():
    "set_grad_checkpointing: each unit runs again in backward; logits and gradients equal the plain model's, also with "
    "a frozen stem (no input needs gradients there: reentrant checkpointing would drop the units' gradients)."
    x = torch.randn(2, 3, 32, 32)
    for freeze_stem in (False, True):
        ref, m = tiny((2, 2, 2, 2), fold=3), tiny((2, 2, 2, 2), fold=3)
        m.set_grad_checkpointing()
        for model in (ref, m):
            for p in [*model.conv1.parameters(), *model.bn1.parameters()]: p.requires_grad_(not freeze_stem)
        calls = []
        m.stage2[0].branch.register_forward_hook(lambda *a: calls.append(1))
        out_ref, out = ref(x), m(x)
        out_ref.sum().backward()
        out.sum().backward()
        assert calls == [1, 1]                        # the forward pass, then again in the backward pass
        assert torch.equal(out, out_ref)
        for (n, p), q in zip(m.named_parameters(), ref.parameters()):
            assert (p.grad is None) == (q.grad is None) == (freeze_stem and n.startswith(('conv1', 'bn1'))), n
            if q.grad is not None: torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5)


def test_a_carry_from_another_model_is_refused():
    "Two ResNetX of one layout but other folds: stage2 of one must not read the earlier outputs the other's stage1 sent."
    fold3, fold4, x = tiny((2, 2, 2, 2), fold=3), tiny((2, 2, 2, 2), fold=4), torch.randn(1, 3, 32, 32)
    stem = nn.Sequential(fold3.conv1, fold3.bn1, fold3.act1, fold3.maxpool)
    with torch.no_grad():
        out1 = fold3.stage1(stem(x))
        assert fold3.stage2(out1).shape == (1, 5, 4, 4)      # its own model's carry: accepted
        with pytest.raises(CarryError, match=r'stage2 of this ResNetX \(fold=4\) needs outputs \[0, 1\]'):
            fold4.stage2(out1)


def test_fx_feature_extraction_at_fold_3():
    "torchvision's (and timm's) FX feature extractor: the carry travels at trace time, so the graph equals the model."
    from torchvision.models.feature_extraction import create_feature_extractor
    m, x = tiny((2, 2, 2, 2), fold=3), torch.randn(2, 3, 32, 32)
    g = create_feature_extractor(m, return_nodes={'stage3': 'mid', 'fc': 'logits'})
    with torch.no_grad():
        out = g(x)
        assert torch.equal(out['logits'], m(x)) and out['mid'].shape == (2, 6, 2, 2)
