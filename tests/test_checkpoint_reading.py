"""Reading a checkpoint file as timm does: the same tensors as timm's own `load_state_dict` (EMA weights first, then
'state_dict', then 'model'; DDP's `module.` prefix dropped), and one clear error for what is not a state dict."""
import pytest, torch, torchvision
from timm.models import load_state_dict

from fastai_resnetx import resnetx18
from fastai_resnetx.model.weights import read_checkpoint, CheckpointError


def tensors(seed:int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {'conv.weight': torch.randn(2, 3, generator=g), 'bn.running_mean': torch.randn(2, generator=g)}


@pytest.mark.parametrize('layout', [
    {'state_dict': 1, 'state_dict_ema': 2, 'model': 3},   # timm's training checkpoints: the EMA weights win
    {'model': 3, 'model_ema': 2},                         # timm's older EMA name
    {'state_dict_ema': 2, 'model_ema': 3},                # both EMA names: state_dict_ema first
    {'state_dict': 1, 'model': 3},
    {'model': 3, 'opt': 0},                               # fastai's Learner.save
    {'plain': 4},                                         # a bare state dict
    {'module': 5}])                                       # a DDP model's state dict: `module.` prefixes
def test_the_tensors_timm_itself_reads(tmp_path, layout):
    def entry(k, seed):
        if k == 'plain': return tensors(seed)
        if k == 'module': return {f'module.{n}': v for n, v in tensors(seed).items()}
        return tensors(seed) if k != 'opt' else {'lr': 0.1}
    obj = {} if 'plain' in layout or 'module' in layout else {k: entry(k, s) for k, s in layout.items()}
    if not obj: obj = entry(*next(iter(layout.items())))
    torch.save(obj, tmp_path / 'c.pth')
    ours, timms = read_checkpoint(tmp_path / 'c.pth'), load_state_dict(str(tmp_path / 'c.pth'))
    assert list(ours) == list(timms) == ['conv.weight', 'bn.running_mean']
    assert all(torch.equal(ours[k], timms[k]) for k in ours)


@pytest.mark.parametrize('obj, words', [
    ({}, r'does not hold a state dict \(a mapping of names to tensors\), got dict'),
    ({'state_dict': {}}, 'does not hold a state dict'),
    ({'conv.weight': torch.zeros(1), 'epoch': 3}, r"is not a state dict: entries \['epoch'\] are not str -> tensor"),
    ({'conv.weight': torch.zeros(1), 7: torch.zeros(1)}, r"entries \[7\] are not str -> tensor"),
    (torch.zeros(3), 'got Tensor')])
def test_what_is_not_a_state_dict_is_one_error_naming_the_file(tmp_path, obj, words):
    torch.save(obj, tmp_path / 'c.pth')
    with pytest.raises(CheckpointError, match=words) as e: read_checkpoint(tmp_path / 'c.pth')
    assert str(e.value).startswith(f"checkpoint file {str(tmp_path / 'c.pth')!r} ")


def test_a_checkpoint_without_batchnorm_counters_loads_every_weight(tmp_path):
    "torchvision's older checkpoints have no `num_batches_tracked`: torch's BatchNorm loads them (counters at 0)."
    # (this found a bug: a missing counter made the whole downsample "new", so its conv kept its random init)
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    sd = {k: v for k, v in tv.state_dict().items() if not k.endswith('num_batches_tracked')}
    fresh = torchvision.models.resnet18()
    fresh.load_state_dict(sd)                                   # the oracle: torchvision's model loads it, strictly
    missing = [k for k in tv.state_dict() if k not in sd]
    assert len(missing) == 20 and all(k.endswith('num_batches_tracked') for k in missing)
    torch.save(sd, tmp_path / 'old.pth')
    m = resnetx18(weights=tmp_path / 'old.pth').eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): assert torch.allclose(m(x), fresh.eval()(x), atol=1e-5)
    counters = {k: v for k, v in m.state_dict().items() if k.endswith('num_batches_tracked')}
    assert len(counters) == len(missing) and all(v.item() == 0 for v in counters.values())
    assert not [k for k in m.pretrained_report.loaded if k.endswith('num_batches_tracked')]
    assert m.pretrained_report.adapted == [] and m.pretrained_report.skipped == [] and m.new_keys == []


def test_what_fits_the_stem_and_the_classifier_by_hand(tmp_path):
    "conv1 may differ in input channels only, fc in rows only (timm adapts/drops them); any other shape is refused."
    torch.manual_seed(0)
    sd = torchvision.models.resnet18().state_dict()
    def load(num_classes=1000, **changed):
        torch.save({**sd, **changed}, tmp_path / 'c.pth')
        return resnetx18(weights=tmp_path / 'c.pth', num_classes=num_classes)
    m = load(**{'fc.weight': torch.randn(10, 512), 'fc.bias': torch.randn(10)})   # another class count: dropped
    assert m.pretrained_report.skipped == ['fc.weight', 'fc.bias'] and torch.equal(m.conv1.weight, sd['conv1.weight'])
    for key, shape, want in (('conv1.weight', (32, 3, 7, 7), (64, 3, 7, 7)), ('conv1.weight', (64, 3, 5, 5), (64, 3, 7, 7)),
                             ('fc.weight', (1000, 256), (1000, 512))):
        with pytest.raises(CheckpointError) as e: load(**{key: torch.randn(*shape)})
        assert f"shape mismatch for {key!r}: {shape} in the checkpoint, {want} in resnet18" in str(e.value)
        assert '(1 shape mismatches); nothing was loaded' in str(e.value)


def test_a_safetensors_file_reads_the_same_tensors(tmp_path):
    from safetensors.torch import save_file
    save_file(tensors(0), tmp_path / 'c.safetensors')
    sd = read_checkpoint(tmp_path / 'c.safetensors')
    assert sorted(sd) == ['bn.running_mean', 'conv.weight'] and all(   # safetensors keeps keys sorted
        torch.equal(sd[k], v) for k, v in tensors(0).items())


def test_a_checkpoint_saved_on_a_gpu_reads_onto_the_cpu(tmp_path, monkeypatch):
    "A file whose tensors were on `cuda:0` when saved (torch records the device): read onto the CPU, on any machine."
    import torch.serialization as ts
    with monkeypatch.context() as m:
        m.setattr(ts, 'location_tag', lambda storage: 'cuda:0')   # what torch.save writes for a CUDA tensor
        torch.save(tensors(1), tmp_path / 'gpu.pth')
    assert b'cuda:0' in (tmp_path / 'gpu.pth').read_bytes()
    sd = read_checkpoint(tmp_path / 'gpu.pth')
    assert all(v.device.type == 'cpu' and torch.equal(v, tensors(1)[k]) for k, v in sd.items())


class RunsCode:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (type(self.marker).touch, (self.marker,))


def test_code_in_a_pickle_is_refused_even_when_torch_is_told_to_allow_it(tmp_path, monkeypatch):
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns torch.load's default to unsafe; the reader asks for weights_only itself."
    marker = tmp_path / 'ran'
    torch.save({'conv.weight': RunsCode(marker)}, tmp_path / 'evil.pth')
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(CheckpointError, match='it is a pickle that would import and run code'):
        read_checkpoint(tmp_path / 'evil.pth')
    assert not marker.exists()


def test_a_missing_file_and_non_finite_values_are_named(tmp_path):
    with pytest.raises(CheckpointError) as e: read_checkpoint(tmp_path / 'nope.pth')
    assert str(e.value) == f"checkpoint file {str(tmp_path / 'nope.pth')!r} does not exist"
    sd = {'a': torch.ones(2), 'b': torch.tensor([1., float('nan')]), 'n': torch.tensor([3]),
          'c': torch.tensor([float('-inf')])}
    torch.save(sd, tmp_path / 'nan.pth')
    with pytest.raises(CheckpointError) as e: read_checkpoint(tmp_path / 'nan.pth')
    assert str(e.value) == (f"checkpoint file {str(tmp_path / 'nan.pth')!r} holds NaN or infinite values in 2 tensor(s) "
                            f"(e.g. 'b'): it is damaged; delete it to download or make it again")


def test_at_most_five_entries_that_are_not_tensors_are_listed(tmp_path):
    torch.save({**{f'n{i}': i for i in range(7)}, 'w': torch.zeros(1)}, tmp_path / 'c.pth')
    with pytest.raises(CheckpointError) as e: read_checkpoint(tmp_path / 'c.pth')
    assert str(e.value).endswith("is not a state dict: entries ['n0', 'n1', 'n2', 'n3', 'n4'] are not str -> tensor")


def test_resnet_keys_by_hand():
    from fastai_resnetx.model.weights import resnet_key
    table = {'stage1.0.branch.conv1.weight': 'layer1.0.conv1.weight', 'stage4.1.branch.bn2.bias': 'layer4.1.bn2.bias',
             'stage2.0.shortcut.0.weight': 'layer2.0.downsample.0.weight', 'conv1.weight': 'conv1.weight',
             'bn1.running_var': 'bn1.running_var', 'fc.bias': 'fc.bias',
             'head.fc.weight': None, 'conv1.0.weight': None, 'stem.conv1.weight': None, 'fc': None, 'stage1.0.x': None}
    assert {k: resnet_key(k) for k in table} == table


def test_the_words_of_a_resnetx_checkpoint_that_does_not_fit():
    from fastai_resnetx.model.weights import map_state_dict
    m = resnetx18(fold=2)
    sd = {**m.state_dict(), 'stage1.0.branch.extra': torch.zeros(3)}
    with pytest.raises(CheckpointError) as e: map_state_dict(sd, m)
    assert str(e.value) == ("the checkpoint does not fit this ResNetX (1 unexpected keys); nothing was loaded:\n"
                            "  unexpected key 'stage1.0.branch.extra' (3,)")
    with pytest.raises(CheckpointError, match=r"^'w.pth' does not fit this ResNetX"): map_state_dict(sd, m, "'w.pth'")
