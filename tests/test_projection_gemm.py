"A projection's 1x1 conv runs as a matmul (faster on CPU for small maps): the same function, gradients and parameters as torch's conv."
import pytest
import torch
from torch import nn
import torch.nn.functional as F
import timm
from fastai_resnetx.model.layers import Conv1x1Gemm, projection


@pytest.mark.parametrize('stride,shape,cl', [(1, (2, 8, 5, 7), False), (2, (2, 8, 5, 7), False), (2, (3, 8, 9, 9), True),
                                             (4, (1, 8, 9, 6), False), (2, (2, 8, 1, 1), True)])
def test_conv1x1_gemm_is_torchs_conv(stride, shape, cl):
    torch.manual_seed(0)
    c = Conv1x1Gemm(8, 6, stride, bias=True)
    x = torch.randn(shape)
    if cl: x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out, ref = c(x), F.conv2d(x, c.weight, c.bias, stride)   # the reference: torch's own conv on the same weights
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)  # the input's layout
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (x, c.weight, c.bias), g), torch.autograd.grad(ref, (x, c.weight, c.bias), g)):
        assert torch.allclose(a, b, atol=1e-4)
    with torch.autocast('cpu', dtype=torch.bfloat16):   # bf16 autocast takes it like the conv
        assert c(x).dtype == torch.bfloat16 and torch.allclose(c(x).float(), ref, atol=0.1, rtol=0.05)


def test_projection_keeps_the_conv_parameters_and_keys():
    p = projection(64, 256, stride=2)
    assert isinstance(p[0], nn.Conv2d) and p[0].weight.shape == (256, 64, 1, 1) and p[0].stride == (2, 2)
    assert list(p.state_dict()) == ['0.weight', '1.weight', '1.bias', '1.running_mean', '1.running_var',
                                    '1.num_batches_tracked']   # torchvision's `downsample` keys: weights still load
    q = projection(64, 256, stride=2, kind='avgpool')
    assert type(q[0]) is nn.AvgPool2d and isinstance(q[1], nn.Conv2d) and q[1].stride == (1, 1)


def test_fold3_model_through_timm_is_traceable_and_matches_conv():
    "timm's model, FX-traced (no shape-dependent branch), gives what the same weights give with plain 1x1 convs."
    torch.manual_seed(0)
    m = timm.create_model('resnetx18', fold=3, num_classes=5).eval()
    gemms = [mod for mod in m.modules() if isinstance(mod, Conv1x1Gemm)]
    assert len(gemms) > 3   # fold 3 adds projections beyond a ResNet's 3
    x = torch.randn(2, 3, 64, 64)
    traced = torch.fx.symbolic_trace(m)
    assert sum(n.op == 'call_function' and n.target.__name__ == 'conv1x1_gemm' for n in traced.graph.nodes) == len(gemms)
    with torch.no_grad():
        out = m(x)
        assert torch.allclose(traced(x), out, atol=1e-5)
        for mod in gemms: mod.forward = nn.Conv2d.forward.__get__(mod)   # back to torch's conv, same weights
        assert torch.allclose(m(x), out, atol=1e-4)


class _Calls(torch.overrides.TorchFunctionMode):
    "Records which of F.conv2d and F.linear run."
    def __init__(self): super().__init__(); self.seen = []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (F.conv2d, F.linear): self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_the_matmul_runs_only_on_cpu_in_eager_mode():
    c = Conv1x1Gemm(8, 6, stride=2)
    for device, want in (('cpu', ['linear']), ('meta', ['conv2d'])):    # meta stands for any other device here
        with _Calls() as calls: c.to(device)(torch.randn(2, 8, 6, 6, device=device))
        assert calls.seen == want, (device, calls.seen)
    c = Conv1x1Gemm(8, 6, stride=2)
    traced = torch.jit.trace(c, torch.randn(2, 8, 6, 6))
    assert 'aten::_convolution' in str(traced.graph) and 'aten::linear' not in str(traced.graph)


@pytest.mark.parametrize('fold', [1, 3])
def test_vmap_ensembles_resnetx_with_stack_module_state(fold):
    "torch.func's model ensembling (torchvision's resnet18 runs it): the same logits as each model alone."
    import copy
    from torch.func import vmap, functional_call, stack_module_state
    from fastai_resnetx import resnetx_small
    from conftest import randomise
    models = [randomise(resnetx_small(fold=fold, num_classes=4), seed) for seed in (0, 1, 2)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to('meta')
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))(params, buffers, x)
    with torch.no_grad(): ref = torch.stack([m(x) for m in models])
    assert out.shape == (3, 2, 4) and (out - ref).abs().max() <= 1e-5 and (ref[0] - ref[1]).abs().max() > 1e-3
