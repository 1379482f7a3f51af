"""Folded timm and torchvision ResNets, however made, through timm's Hugging Face round trip (`save_for_hf`, then
`create_model('local-dir:...')` or `'hf-hub:...'`): the saved tensors come back exactly, at the saved fold, with no
download and no read of the source's checkpoint."""
import json, shutil

import huggingface_hub, pytest, timm, torch, torchvision
from fastai_resnetx import fold_resnet, folded_arch
from conftest import randomise, fill_hf_cache


def reload(folder):
    return timm.create_model(f'local-dir:{folder}', pretrained=True).eval()


def same_tensors(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    "An empty Hugging Face cache, offline."
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    return tmp_path / 'hub'


def test_pretrained_then_tuned_comes_back_as_saved_not_as_the_source(tmp_path, offline_hub):
    src = fill_hf_cache(offline_hub, 'resnet10t')
    m = timm.create_model('folded_resnet10t', pretrained=True, fold=3, num_classes=7)
    assert torch.equal(m.conv1[0].weight, src['conv1.0.weight'])         # the source's weights, from the cache
    randomise(m, seed=3)                                                   # stands for fine-tuning
    timm.models.save_for_hf(m, tmp_path / 'tuned')
    config = json.loads((tmp_path / 'tuned' / 'config.json').read_text())
    assert config['architecture'] == 'folded_resnet10t' and config['model_args']['fold'] == 3
    back = reload(tmp_path / 'tuned')
    assert back.cfg.fold == 3 and back.num_classes == 7 and same_tensors(m, back)
    shutil.rmtree(offline_hub)                                             # the source's checkpoint is not read
    assert same_tensors(m, reload(tmp_path / 'tuned'))


MADE = {
    'folded_arch': lambda: folded_arch('folded_resnet10t', fold=2)(num_classes=5),
    'fold_resnet timm': lambda: fold_resnet(timm.create_model('resnet10t', num_classes=4), fold=3),
    'fold_resnet torchvision': lambda: fold_resnet(torchvision.models.resnet18(num_classes=4), fold=2),
    'folded_tv 1 channel': lambda: timm.create_model('folded_tv_resnet18', fold=3, num_classes=6, in_chans=1),
}
NAMES = {'folded_arch': 'folded_resnet10t', 'fold_resnet timm': 'folded_resnet10t',
         'fold_resnet torchvision': 'folded_tv_resnet18', 'folded_tv 1 channel': 'folded_tv_resnet18'}


@pytest.mark.parametrize('how', list(MADE))
def test_every_way_of_folding_round_trips(tmp_path, how):
    m = randomise(MADE[how](), seed=1)
    timm.models.save_for_hf(m, tmp_path / 'm')
    config = json.loads((tmp_path / 'm' / 'config.json').read_text())
    assert config['architecture'] == NAMES[how] and config['model_args']['fold'] == m.cfg.fold > 1
    back = reload(tmp_path / 'm')
    x = torch.randn(2, m.conv1.weight.shape[1] if hasattr(m.conv1, 'weight') else 3, 32, 32)
    assert back.cfg.fold == m.cfg.fold and back.plan.sources == m.plan.sources and same_tensors(m, back)
    with torch.no_grad(): assert torch.equal(back(x), m(x))


def test_hf_hub_from_a_filled_cache(tmp_path, offline_hub):
    m = randomise(timm.create_model('folded_resnet10t', fold=2, num_classes=3), seed=2)
    commit = 'abcdef0123456789abcdef0123456789abcdef01'
    repo = offline_hub / 'models--someone--folded10t'
    timm.models.save_for_hf(m, repo / 'snapshots' / commit)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    back = timm.create_model('hf-hub:someone/folded10t', pretrained=True)
    assert back.cfg.fold == 2 and same_tensors(m, back)
