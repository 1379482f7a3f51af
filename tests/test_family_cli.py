"""`resnetx train --arch <a timm or torchvision ResNet> --fold 2 --pretrained`: the folded ResNet, its weights read
from the local Hugging Face cache (offline), trained on the digits and exported."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest, torch, timm
from conftest import fill_hf_cache

RESNETX = Path(sys.executable).parent / 'resnetx'


@pytest.mark.slow
def test_train_a_folded_timm_resnet_from_cached_weights(tmp_path):
    sd = fill_hf_cache(tmp_path / 'hub', 'resnet10t')
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / 'hub'), HF_HUB_OFFLINE='1', TORCH_HOME=str(tmp_path / 'torch'))
    out = tmp_path / 'run'
    res = subprocess.run([str(RESNETX), 'train', '--arch', 'resnet10t', '--fold', '2', '--pretrained', '--epochs', '1',
                          '--size', '32', '--out', str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['arch'] == 'resnet10t' and metrics['fold'] == 2 and metrics['pretrained'] is True
    from fastai.learner import load_learner
    body = load_learner(out / 'export.pkl').model[0]
    stem = body[0]   # the folded model's first layer: timm's deep stem, frozen in the one (head) epoch
    assert torch.equal(stem[0].weight, sd['conv1.0.weight'])   # the cached weights, not a fresh init
    assert any(type(m).__name__ == 'Stage' for m in body)
