"Pretrained weights, offline: the tests write their own checkpoints where torchvision, timm and torch hub look for them."
import os, re, warnings
from pathlib import Path

import pytest, timm, torch, torchvision
from torch import nn
from safetensors.torch import save_file
from fastai_resnetx import resnetx18, resnetx50, resnetx152, resnetx_mbconv, ResNetX, RESNETX_CONFIGS
from fastai_resnetx.model.archs import load_pretrained, torchvision_weights, default_cfgs, PRETRAINED_TAGS
from fastai_resnetx.model.weights import resnet_key, CheckpointError, read_checkpoint, resnet_counterpart
from conftest import randomise, skip_init


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    "An empty torch hub cache."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return tmp_path / 'torch'


def random_resnet(depth:int, seed:int=0) -> nn.Module:
    "torchvision's ResNet with random weights and BatchNorm statistics (so that every tensor matters)."
    with skip_init(): model = getattr(torchvision.models, f'resnet{depth}')()
    return randomise(model, seed)


def cache_resnet(depth:int, entry:str='DEFAULT') -> nn.Module:
    "Save a random ResNet where torchvision's weights `entry` are cached ($TORCH_HOME/hub/checkpoints/<file name>)."
    tv, url = random_resnet(depth), torchvision.models.get_model_weights(f'resnet{depth}')[entry].url
    path = Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tv.state_dict(), path)
    return tv


def max_diff(a:nn.Module, b:nn.Module, c_in:int=3, size:int=32) -> float:
    x = torch.randn(2, c_in, size, size)
    with torch.no_grad(): return (a.eval()(x) - b.eval()(x)).abs().max().item()


def is_copy_of(m:nn.Module, tv:nn.Module) -> bool:
    sd = tv.state_dict()
    return all(torch.equal(v, sd[resnet_key(k)]) for k, v in m.state_dict().items())


def test_resnetx18_pretrained_gives_torchvision_logits(torch_home):
    tv = cache_resnet(18)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                       # fold 1: everything has a counterpart, no warning
        m = resnetx18(pretrained=True, fold=1)
    assert max_diff(m, tv) <= 1e-4
    assert m.new_keys == [] and m.unused_keys == [] and len(m.pretrained_report.loaded) == len(m.state_dict())
    # fastai's other calling convention, names and members all reach the same file
    for w in ('DEFAULT', 'IMAGENET1K_V1', 'ResNet18_Weights.IMAGENET1K_V1', torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
              'tv_in1k', 'resnetx18.tv_in1k'):
        assert torch.equal(resnetx18(weights=w).conv1.weight, tv.conv1.weight)


@pytest.mark.slow   # ~3 s
def test_timm_create_model_pretrained_offline(torch_home, tmp_path):
    "timm's own path: create_model(pretrained=True) reads the torch hub cache; the overlay file is train.py's --pretrained-path."
    tv = cache_resnet(50, 'IMAGENET1K_V2')
    m = timm.create_model('resnetx50', pretrained=True, num_classes=1000)
    assert max_diff(m, tv) <= 1e-4 and m.pretrained_cfg['tag'] == 'tv2_in1k' and 'state_dict' not in m.pretrained_cfg
    assert m.pretrained_cfg['input_size'] == (3, 176, 176)   # the data config is the weights' (tv2 trained at 176 px)
    other = random_resnet(50, seed=1)
    torch.save({'state_dict': other.state_dict(), 'epoch': 3}, tmp_path / 'ckpt.pth.tar')   # a timm train.py checkpoint
    m = timm.create_model('resnetx50', pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'ckpt.pth.tar')))
    assert max_diff(m, other) <= 1e-4 and m.pretrained_cfg['file'] == str(tmp_path / 'ckpt.pth.tar')
    f = timm.create_model('resnetx50.tv2_in1k', pretrained=True, features_only=True, out_indices=(1, 4))
    ref = nn.Sequential(*list(tv.children())[:-2]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(): assert torch.allclose(f.eval()(x)[-1], ref(x), atol=1e-4)


def test_sources_are_torchvision_and_timm_data():
    "The tv tags carry torchvision's own URLs; the timm tags timm's hub ids; the default is torchvision's DEFAULT."
    for name, tags in PRETRAINED_TAGS.items():
        resnet, cfgs = name.replace('resnetx', 'resnet'), default_cfgs[name].cfgs
        enum = torchvision.models.get_model_weights(resnet)
        assert {cfgs[t].url for t in tags if t.startswith('tv')} == {m.url for m in enum}
        assert cfgs[tags[0]].url == enum.DEFAULT.url
        assert cfgs['a1_in1k'].hf_hub_id == f'timm/{resnet}.a1_in1k'
    assert timm.list_pretrained('resnetx50*') == ['resnetx50.a1_in1k', 'resnetx50.tv2_in1k', 'resnetx50.tv_in1k']
    assert {n for n, cfg in RESNETX_CONFIGS.items() if resnet_counterpart(cfg)} == set(PRETRAINED_TAGS)   # every ResNet layout


def projection_names(keys): return sorted({k.split('.shortcut.')[0] for k in keys})


@pytest.mark.parametrize('fold, new, unused', [
    (2, ['stage1.1', 'stage2.1', 'stage3.1', 'stage4.1'], []),
    # fold 3: unit stage2.0 reads the stem (64 ch), the ResNet's layer2.0.downsample reads 256 ch: not loaded, unused
    (3, ['stage2.0', 'stage2.1', 'stage2.2', 'stage3.1', 'stage3.2', 'stage4.1', 'stage4.2'], ['layer2.0.downsample']),
])
def test_folds_load_every_mapped_tensor(torch_home, fold, new, unused):
    sd = cache_resnet(50).state_dict()
    torch.manual_seed(5); init = resnetx50(fold=fold).state_dict()
    with pytest.warns(UserWarning, match=f'{len(new)} projections have no counterpart') as record:
        torch.manual_seed(5); m = resnetx50(pretrained=True, fold=fold)
    said = [str(w.message) for w in record if 'counterpart' in str(w.message)]
    assert len(said) == 1 and re.fullmatch(rf"{len(m.new_keys)} tensors of {len(new)} projections have no counterpart in "
                                           rf".+ and keep their initialisation \({', '.join(n + '.shortcut' for n in new)}\); see "
                                           rf"`model.new_keys`", said[0]), said
    assert projection_names(m.new_keys) == new
    assert all(isinstance(m.get_submodule(n + '.shortcut'), nn.Sequential) for n in new)   # real projections, whole
    assert sorted({k.rsplit('.', 2)[0] for k in m.unused_keys}) == unused
    for k, v in m.state_dict().items():
        if k in m.new_keys: assert '.shortcut.' in k and torch.equal(v, init[k]), k   # kept their init
        else: assert torch.equal(v, sd[resnet_key(k)]), k
    assert len(m.pretrained_report.loaded) + len(m.new_keys) == len(m.state_dict())


def test_the_missing_projections_warning_points_at_the_users_line(torch_home):
    cache_resnet(18)
    with pytest.warns(UserWarning, match='projections have no counterpart') as record: resnetx18(pretrained=True, fold=2)
    assert [w.filename for w in record if 'counterpart' in str(w.message)] == [__file__]


def test_classifier_and_first_conv(torch_home):
    sd = cache_resnet(18).state_dict()
    m = resnetx18(pretrained=True, n_out=10, c_in=1)
    r = m.pretrained_report
    assert r.skipped == ['fc.weight', 'fc.bias'] and {'fc.weight', 'fc.bias'} <= set(r.unused_keys)
    assert r.adapted == ['conv1.weight'] and torch.allclose(m.conv1.weight, sd['conv1.weight'].sum(1, keepdim=True))
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    w5 = resnetx18(pretrained=True, c_in=5).conv1.weight      # timm's rule for more channels: repeat, rescale by 3/c_in
    assert torch.allclose(w5[:, 3:5], sd['conv1.weight'][:, :2] * 3 / 5) and torch.allclose(w5[:, :3], sd['conv1.weight'] * 3 / 5)


def test_local_files(tmp_path):
    tv = random_resnet(18)
    torch.save(tv.state_dict(), tmp_path / 'r18.pth')
    save_file(tv.state_dict(), tmp_path / 'r18.safetensors')
    torch.save({'model': tv.state_dict(), 'opt': {'lr': 0.1}}, tmp_path / 'learner.pth')   # fastai's Learner.save
    for w in (tmp_path / 'r18.pth', str(tmp_path / 'r18.safetensors'), tmp_path / 'learner.pth', tv.state_dict()):
        assert is_copy_of(resnetx18(weights=w), tv)


def test_timm_prefilled_hf_cache(tmp_path, monkeypatch, torch_home):
    tv = random_resnet(18)
    save_file(tv.state_dict(), tmp_path / 'model.safetensors')
    # a Hugging Face cache filled on another machine: found without asking the hub
    import huggingface_hub.constants as hf
    monkeypatch.setattr(hf, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    snapshot = tmp_path / 'hf' / 'models--timm--resnet18.a1_in1k' / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / 'refs').mkdir()
    (snapshot.parent.parent / 'refs' / 'main').write_text('0' * 40)
    (tmp_path / 'model.safetensors').rename(snapshot / 'model.safetensors')
    for m in (resnetx18(weights='timm:resnet18.a1_in1k'), resnetx18(weights='a1_in1k'),
              timm.create_model('resnetx18.a1_in1k', pretrained=True)):
        assert is_copy_of(m, tv) and 'models--timm--resnet18.a1_in1k' in m.pretrained_report.source
    with pytest.raises(ValueError, match=r"`weights`='timm:resnet50.a1_in1k': resnetx18 takes the timm weights \['timm:resnet18.tv_in1k'"):
        resnetx18(weights='timm:resnet50.a1_in1k')
    # not cached, and the hub cannot be reached (refused here): the error says at once where to put the file
    with pytest.raises(CheckpointError, match=r"the weights resnetx34.a1_in1k are not on this machine and huggingface.co "
                                              r"cannot be reached .* to '.*models--timm--resnet34.a1_in1k'"):
        timm.create_model('resnetx34.a1_in1k', pretrained=True)


def test_resnetx_file_for_a_variant_without_resnet(tmp_path, torch_home):
    assert resnet_counterpart(resnetx_mbconv().cfg) is None and resnet_counterpart(resnetx50(fold=3).cfg) == 'resnet50'
    with pytest.raises(ValueError, match='resnetx_mbconv has no pretrained weights'): resnetx_mbconv(pretrained=True)
    with pytest.raises(ValueError, match='resnetx_mbconv has no pretrained weights'): resnetx_mbconv(weights='DEFAULT')
    src = resnetx_mbconv(fold=2, n_out=7)
    torch.save(src.state_dict(), tmp_path / 'mb.pth')
    m = resnetx_mbconv(fold=2, n_out=7, weights=tmp_path / 'mb.pth')
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), src.state_dict().values()))
    with pytest.raises(CheckpointError, match='unexpected key|missing key'): resnetx_mbconv(fold=1, weights=tmp_path / 'mb.pth')
    with pytest.raises(CheckpointError, match='has no ResNet counterpart'): resnetx_mbconv(weights=random_resnet(18).state_dict())


def test_mismatch_lists_problems_and_loads_nothing(tmp_path, torch_home):
    torch.save(random_resnet(18).state_dict(), tmp_path / 'r18.pth')
    m = resnetx50()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CheckpointError) as e: load_pretrained(m, tmp_path / 'r18.pth')
    msg = str(e.value)
    assert 'r18.pth' in msg and 'nothing was loaded' in msg and 'resnet50' in msg
    assert "missing key 'layer1.0.conv3.weight'" in msg and "shape mismatch for 'layer1.0.conv1.weight'" in msg
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert not hasattr(m, 'pretrained_report')
    with torch.device('meta'): sd = torchvision.models.resnet34().state_dict()   # same shapes, more units: never half-loaded
    with pytest.raises(CheckpointError, match=r"does not fit resnet18 \(96 unexpected keys\).*\n  unexpected key 'layer1.2.conv1"):
        resnetx18(weights=sd)


def test_unreadable_files(tmp_path):
    torch.save(random_resnet(18).state_dict(), tmp_path / 'ok.pth')
    data = (tmp_path / 'ok.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'cut.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": [1, 2')
    for f in ('cut.pth', 'cut.safetensors'):
        with pytest.raises(CheckpointError, match=f"could not read checkpoint '.*{f}': corrupted, truncated"):
            resnetx18(weights=tmp_path / f)
    with pytest.raises(CheckpointError, match="does not exist"): resnetx18(weights=tmp_path / 'nope.pth')
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='does not hold a state dict'): read_checkpoint(tmp_path / 'list.pth')


class RunsCode:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / 'ran'
    torch.save({'conv1.weight': RunsCode(marker)}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match=r"refused to load '.*evil.pth': it is a pickle that would import and run code"):
        resnetx18(weights=tmp_path / 'evil.pth')
    assert not marker.exists()


def test_bad_weights_values_and_no_download(torch_home):
    with pytest.raises(ValueError, match=r"`weights`='IMAGENET1K_V2' is not torchvision weights of resnet18; allowed: "
                                         r"\['IMAGENET1K_V1', 'DEFAULT'\]"):
        resnetx18(weights='IMAGENET1K_V2')
    with pytest.raises(ValueError, match='for another model'): torchvision_weights('resnet18', torchvision.models.ResNet50_Weights.DEFAULT)
    with pytest.raises(ValueError, match='`pretrained` must be True or False'): resnetx18(pretrained='yes')
    with pytest.raises(ValueError, match=r"`weights` must be True, .* got 3"): resnetx18(weights=3)
    # empty cache: the download is tried (and refused here), and the error says where to put the file
    with pytest.raises(CheckpointError, match=r"not on this machine .*cannot be reached .*to '.*hub/checkpoints/resnet18-f37072fd.pth'"):
        resnetx18(pretrained=True)
    assert not list(torch_home.rglob('*.pth'))   # no partial file left behind


def test_resnet152_layout_is_mapped_on_meta():
    with torch.device('meta'): m, m3, tv = resnetx152(), resnetx152(fold=3), torchvision.models.resnet152()
    assert resnet_counterpart(m3.cfg) == 'resnet152'
    assert {resnet_key(k) for k in m.state_dict()} == set(tv.state_dict())
    assert {resnet_key(k) for k in m3.state_dict() if '.shortcut.' not in k} < set(tv.state_dict())


def test_a_reachable_host_whose_download_fails_says_where_the_file_goes(torch_home, monkeypatch):
    "The host answers but the download fails (a proxy, a 404): torchvision's loader is tried, and the error names the file."
    from fastai_resnetx.model import weights
    monkeypatch.setattr(weights, '_reachable', lambda host, hf=False: True)
    tried = []
    def fail(url, dst, *a, **k): tried.append(url); raise OSError('HTTP Error 403: Forbidden')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', fail)
    with pytest.raises(CheckpointError, match=r"could not download the weights resnetx18.tv_in1k from https://download"
                                              r".*HTTP Error 403.*copy that file to '.*hub/checkpoints/resnet18-f37072fd.pth'"):
        resnetx18(pretrained=True)
    assert tried == ['https://download.pytorch.org/models/resnet18-f37072fd.pth']
