"""`output_stride` 16 and 8, as timm's ResNet does it: the last stages dilate instead of striding (DeepLab's backbones)."""
import pytest, torch, timm

from fastai_resnetx import resnetx34, skip_source
from fastai_resnetx.model.weights import map_state_dict


@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name,resnet', [('resnetx34', 'resnet34'), ('resnetx50', 'resnet50')])
def test_fold1_is_timms_dilated_resnet(name, resnet, output_stride):
    torch.manual_seed(0)
    ref = timm.create_model(resnet, output_stride=output_stride).eval()
    m = timm.create_model(name, output_stride=output_stride).eval()
    m.load_state_dict(map_state_dict(ref.state_dict(), m))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = m.forward_intermediates(x, intermediates_only=True), ref.forward_intermediates(x, intermediates_only=True)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))
        assert torch.allclose(m(x), ref(x), atol=1e-5)
    assert [f['reduction'] for f in m.feature_info] == [f['reduction'] for f in ref.feature_info]
    assert [f['reduction'] for f in m.feature_info] == {16: [2, 4, 8, 16, 16], 8: [2, 4, 8, 8, 8]}[output_stride]


def test_features_only_at_fold3_output_stride_16():
    m = timm.create_model('resnetx34', features_only=True, output_stride=16, fold=3).eval()
    with torch.no_grad(): feats = m(torch.randn(1, 3, 64, 64))
    assert [64 // f.shape[-1] for f in feats] == m.feature_info.reduction() == [2, 4, 8, 16, 16]


def test_folded_and_dilated_units_follow_the_fold_rule():
    "Each unit adds the output the fold rule names, also where a skip enters the dilated stages."
    m = resnetx34(fold=3, output_stride=8).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = [m.forward_stem(x)]
        for l, unit in enumerate(m.units, start=1): outs.append(unit(outs[l - 1], outs[skip_source(l, fold=3)]))
        assert torch.allclose(m.forward_features(x), outs[-1], atol=1e-5) and outs[-1].shape[-1] == 8


def test_smp_deeplabv3plus_on_a_folded_resnetx():
    import segmentation_models_pytorch as smp   # a dev extra, pinned in constraints.txt
    net = smp.DeepLabV3Plus('tu-resnetx34', encoder_weights=None, classes=3, fold=3).eval()
    assert net.encoder.model.model.cfg.fold == 3 and net.encoder.model.model.cfg.output_stride == 16
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): out = net(x)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()


def test_a_bad_output_stride_is_a_clear_error():
    with pytest.raises(ValueError, match=r'`output_stride` must be one of \[8, 16, 32\], got 4'): resnetx34(output_stride=4)
