"""timm's Hugging Face round trip: `save_for_hf`, then `create_model('local-dir:...')` or `'hf-hub:...'` (from a filled
local cache, offline) gives back the same folded model: same settings, same logits."""
import json, os
import pytest, torch
import timm
import huggingface_hub

from fastai_resnetx import resnetx18, resnetx34, resnetx_arch, RESNETX_CONFIGS


def round_trip(m, folder):
    timm.models.save_for_hf(m, folder)
    return timm.create_model(f'local-dir:{folder}', pretrained=True).eval()


def same_logits(a, b, size=64):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(): return torch.equal(a.eval()(x), b.eval()(x))


def test_fold3_with_a_custom_window_comes_back_folded(tmp_path):
    m = resnetx18(fold=3, start_id=4, num_classes=7)
    back = round_trip(m, tmp_path / 'rx')
    config = json.loads((tmp_path / 'rx' / 'config.json').read_text())
    assert config['architecture'] == 'resnetx18'
    assert config['model_args']['fold'] == 3 and config['model_args']['start_id'] == 4
    assert (back.cfg.fold, back.cfg.start_id, back.cfg.end_id, back.num_classes) == (3, 4, None, 7)
    assert back.plan.sources == m.plan.sources and same_logits(m, back)


@pytest.mark.parametrize('fold', range(1, 8))
def test_resnetx18_every_fold(tmp_path, fold):
    m = resnetx18(fold=fold, num_classes=3)
    back = round_trip(m, tmp_path / 'rx')
    assert back.cfg.fold == fold and same_logits(m, back)


def test_config_holds_every_setting_that_differs_however_the_model_was_built(tmp_path):
    built = {
        'direct call': resnetx18(fold=2, end_id=6, stem='deep', shortcut='avgpool', stem_width=32),
        'timm': timm.create_model('resnetx18', fold=2, end_id=6, stem='deep', shortcut='avgpool', stem_width=32),
        'fastai arch': resnetx_arch('resnetx18', fold=2, end_id=6, stem='deep', shortcut='avgpool', stem_width=32)(),
    }
    want = dict(fold=2, end_id=6, stem='deep', shortcut='avgpool', stem_width=32)
    for how, m in built.items():
        timm.models.save_for_hf(m, tmp_path / how)
        args = json.loads((tmp_path / how / 'config.json').read_text())['model_args']
        assert {k: args.get(k) for k in want} == want, how
        assert 'num_units' not in args and 'unit' not in args, how   # the arch's own values are not repeated
        back = timm.create_model(f'local-dir:{tmp_path / how}', pretrained=True)
        assert back.cfg == m.cfg and same_logits(m, back), how


def test_hf_hub_from_a_filled_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    commit = '0123456789abcdef0123456789abcdef01234567'
    repo = tmp_path / 'models--someone--rx34'
    m = resnetx34(fold=2, num_classes=5)
    timm.models.save_for_hf(m, repo / 'snapshots' / commit)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    back = timm.create_model('hf-hub:someone/rx34', pretrained=True, cache_dir=tmp_path)
    assert back.cfg.fold == 2 and back.num_classes == 5 and same_logits(m, back)


def test_a_folder_without_weights_is_a_clear_error(tmp_path):
    timm.models.save_for_hf(resnetx18(fold=2), tmp_path / 'rx')
    os.remove(tmp_path / 'rx' / 'pytorch_model.bin')
    with pytest.raises(Exception, match=r"holds none of the weights files \['model.safetensors', 'pytorch_model.bin'\]"):
        timm.create_model(f'local-dir:{tmp_path / "rx"}', pretrained=True)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(RESNETX_CONFIGS))
def test_every_arch_folded(tmp_path, name):
    total = sum(RESNETX_CONFIGS[name].num_units)
    fold = 3 if total > 4 else 2          # resnetx_small's 4 units: a window from unit 2 to unit 3
    m = timm.create_model(name, fold=fold, end_id=total - 1, num_classes=4)
    back = round_trip(m, tmp_path / name)
    assert (back.cfg.fold, back.cfg.end_id) == (fold, total - 1) and same_logits(m, back, 32)
