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
