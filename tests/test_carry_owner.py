"A carry belongs to one tensor of one model: fastai's tensors, another model's stage and a copy of the model."
import copy

import pytest
import torch
from fastai.torch_core import TensorImage

from fastai_resnetx import ResNetX, ResNetXConfig
from fastai_resnetx.model.resnetx import CarryError
from conftest import randomise, reference_forward

CFG = ResNetXConfig((2, 2, 2), 'basic', (8, 16, 24), strides=(1, 2, 2), stem='small', stem_width=8, num_classes=3,
                    fold=3)


def models():
    torch.manual_seed(0)
    return randomise(ResNetX(CFG)).eval(), randomise(ResNetX(CFG)).eval()


@pytest.mark.parametrize('kind', [torch.Tensor, TensorImage])
def test_a_module_between_stages_is_an_error_on_fastai_tensors_too(kind):
    a, _ = models()
    x = torch.randn(2, 3, 16, 16).as_subclass(kind)
    with torch.no_grad():
        s1 = a.stage1(a.forward_stem(x))
        assert torch.allclose(a.stage2(s1), reference_forward(a, x, keep=True)[1][4], atol=1e-5)   # the stage's own output: fine
        for changed in (s1 * 2, s1 + 1, torch.nn.functional.dropout(s1, 0.5, training=True)):
            with pytest.raises(CarryError, match='does not carry them'): a.stage2(changed)


def test_another_models_carry_is_refused_and_a_copy_has_its_own():
    a, b = models()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        with pytest.raises(CarryError): b.stage2(a.stage1(a.forward_stem(x)))   # same plan, other weights
        c = copy.deepcopy(a)
        with pytest.raises(CarryError): c.stage2(a.stage1(a.forward_stem(x)))
        assert torch.allclose(c(x), a(x), atol=1e-6)                           # the copy runs as itself


@pytest.mark.parametrize('kind', [torch.Tensor, TensorImage])
def test_detach_carry_drops_the_earlier_outputs_and_leaves_the_stage_output_working(kind, tmp_path):
    from fastai_resnetx import detach_carry
    a, _ = models()
    x = torch.randn(2, 3, 16, 16).as_subclass(kind)
    with torch.no_grad():
        s1 = a.stage1(a.forward_stem(x))
        kept = detach_carry(s1)
        assert torch.equal(kept, s1) and kept.data_ptr() == s1.data_ptr()          # the same values, no copy
        torch.save(s1, tmp_path / 'with.pt')
        torch.save(kept, tmp_path / 'without.pt')
        # the carry holds outputs 0 and 1 (8 channels, 16x16 each): two more maps of s1's size, about 3x the file
        ratio = (tmp_path / 'with.pt').stat().st_size / (tmp_path / 'without.pt').stat().st_size
        assert 2.5 < ratio < 3.5, ratio
        assert torch.load(tmp_path / 'without.pt', weights_only=False).__dict__.get('resnetx_carry') is None
        with pytest.raises(CarryError): a.stage2(kept)                                # what the user keeps carries nothing
        assert torch.allclose(a.stage2(s1), reference_forward(a, x, keep=True)[1][4], atol=1e-5)   # s1 still works
        t = torch.ones(3)
        assert detach_carry(t) is t and detach_carry(None) is None                  # nothing to drop: the same object


def test_hooks_and_wrappers_that_rebuild_keyword_arguments_never_see_the_carry():
    "accelerate's device hooks (dispatch_model, cpu_offload) and a pytree-mapping pre-hook: the plain model's logits."
    from accelerate import cpu_offload, dispatch_model
    a, _ = models()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad(): ref = reference_forward(a, x)
    dispatched = dispatch_model(copy.deepcopy(a), device_map={n: 'cpu' for n, _ in a.named_children()},
                                main_device='cpu', force_hooks=True)
    assert hasattr(dispatched.stage2, '_hf_hook')                             # accelerate's hook is on each stage
    offloaded = cpu_offload(copy.deepcopy(a), execution_device=torch.device('cpu'))
    hooked, seen = copy.deepcopy(a), []
    def rebuild(mod, args, kwargs):   # returns fresh containers, as pytree-mapping hooks do
        seen.append(sorted(kwargs))
        return torch.utils._pytree.tree_map(lambda t: t, (args, kwargs))
    for name in hooked.stage_names: getattr(hooked, name).register_forward_pre_hook(rebuild, with_kwargs=True)
    with torch.no_grad():
        for m in (dispatched, offloaded, hooked): assert (m(x) - ref).abs().max() <= 1e-5
    assert seen == [[]] * 3                                                    # no hand-over keywords to see


def test_two_threads_on_one_model_each_get_their_own_logits():
    from concurrent.futures import ThreadPoolExecutor
    a, _ = models()
    xs = [torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    with torch.no_grad():
        refs = [reference_forward(a, x) for x in xs]
        with ThreadPoolExecutor(4) as pool: outs = list(pool.map(a, xs))
    assert all((o - r).abs().max() <= 1e-5 for o, r in zip(outs, refs))
