"One naming rule everywhere: ResNetX names are ours, torchvision's names torchvision's, other timm names (or `timm/NAME`) timm's."
import pytest, timm, torchvision
from fastai_resnetx import resnetx18, model_summary, arch_summary
from fastai_resnetx.inspection.build import arch_from_name, build_arch, TimmName
from fastai_resnetx.job.train import resolve_arch
from resnetx_cli import main

def test_names_shared_with_torchvision_are_torchvisions():
    assert arch_from_name('resnet50') is torchvision.models.resnet50            # fastai's resnet50 is torchvision's too
    assert arch_from_name('vit_b_16') is torchvision.models.vit_b_16
    assert arch_from_name('fcn_resnet50') is torchvision.models.segmentation.fcn_resnet50
    assert isinstance(build_arch('resnet18', 'meta'), torchvision.models.ResNet)

def test_timm_names_and_the_timm_prefix():
    for name, expected in [('convnext_nano', 'convnext_nano'), ('timm/resnet50', 'resnet50'), ('timm/resnet18.a1_in1k', 'resnet18.a1_in1k')]:
        arch = arch_from_name(name)
        assert isinstance(arch, TimmName) and arch == expected and arch_from_name(arch) is arch   # stays timm's
    assert isinstance(build_arch('timm/resnet18', 'meta'), timm.models.ResNet)

def test_resnetx_names_are_ours():
    assert arch_from_name('resnetx18') is resnetx18

@pytest.mark.parametrize('name, match', [('no_such_net', "arch='no_such_net' is not known"),
                                         ('timm/vit_b_16', "timm has no model 'vit_b_16'")])
def test_unknown_names(name, match):
    with pytest.raises(ValueError, match=match): arch_from_name(name)

def test_every_tool_reads_names_the_same_way():
    "model_summary, arch_summary and resolve_arch (train and the CLI) build the same model for a name"
    assert [r.name for r in arch_summary('resnet18')][-2:] == ['avgpool', 'fc']                # torchvision's
    assert [r.name for r in arch_summary('timm/resnet18')][-2:] == ['global_pool', 'fc']       # timm's
    assert model_summary('resnet18', (1, 3, 32, 32)).rows[-1].name == 'fc'
    assert model_summary('timm/resnet18', (1, 3, 32, 32)).rows.filter(lambda r: r.name == 'global_pool')
    assert resolve_arch('vit_b_16') is torchvision.models.vit_b_16
    assert resolve_arch('timm/resnet50') == 'resnet50' and isinstance(resolve_arch('timm/resnet50'), TimmName)
    with pytest.raises(ValueError, match='`fold` only applies to ResNetX'): resolve_arch('convnext_atto', fold=2)
    # a ResNet at fold > 1 is its folded arch, by the same rule: torchvision's for a torchvision name, else timm's
    for name, folded in [('resnet18', 'folded_tv_resnet18'), ('timm/resnet18', 'folded_resnet18'),
                         ('seresnext26d_32x4d', 'folded_seresnext26d_32x4d')]:
        arch = resolve_arch(name, fold=2)
        assert arch.func.__name__ == folded and arch.keywords['fold'] == 2, name

def test_cli_summary_of_a_torchvision_and_a_timm_name(capsys):
    assert main(['summary', 'mobilenet_v3_small', '--size', '64']) == 0   # a torchvision name neither timm nor fastai has
    out = capsys.readouterr().out
    assert '(features)' in out and 'MobileNetV3: input 1x3x64x64, counted on meta' in out
    assert main(['summary', 'timm/resnet18', '--size', '32']) == 0
    assert '(global_pool)' in capsys.readouterr().out
