"""timm's OWN model tests (`tests/test_models.py` of the installed timm's sdist, fetched at test time, never copied here)
run on our archs, offline: what every timm model must do, checked by timm.

What runs: every test of a sample of our archs, one per kind (selected by the conftest below, on the `model_name` of
  each test): the ResNetX archs of each block kind (resnetx18 basic, resnetx50 bottleneck, resnetx_mbconv, resnetx_fused,
  the small-image resnetx_small and resnetx20) with their pretrained tags, and the folded families, one per family kind
  (timm BasicBlock with a tiered stem and avg-down: folded_resnet10t; timm Bottleneck with SE and groups:
  folded_seresnext26t_32x4d; torchvision BasicBlock and Bottleneck: folded_tv_resnet18, folded_tv_resnet50) at fold 1
  with their pretrained tags, plus fold > 1 variants registered below for this run only (the named archs are fold 1,
  and it takes a fold > 1 for skips to cross stages, which is what prune, intermediates and FX must get right).
  resnetx34/101/152 are the same code as resnetx18/50 with more blocks; every tag of every arch loads in test_weights.
- Excluded by name: `test_model_forward_torchscript`. `torch.jit.script` of the whole model cannot work: the earlier
  outputs that folded skips read travel as a Python attribute on a stage's output tensor, which TorchScript cannot type,
  and `torch.jit.script` is deprecated in torch 2.14. `test_model_forward_fx_torchscript` runs and passes: a TorchScript
  model is had through FX, which resolves the attribute at trace time.
- The pretrained tests (`test_model_load_pretrained`, `test_model_features_pretrained`) run against random checkpoints put
  where the loaders look (a temporary torch hub cache and Hugging Face cache); the network is refused.
"""
import os, re, subprocess, sys, tarfile, textwrap, xml.etree.ElementTree as ET
from pathlib import Path

import pytest, timm
from fastai_resnetx.model.archs import PRETRAINED_TAGS

SELECT = 'not test_model_forward_torchscript'
# registered for this run only (the harness below): the fold > 1 archs, and the module names timm's intermediate tests
# select by
FOLDED = {'resnetx18_fold3': ('resnetx18', 3), 'folded_resnet10t_fold3': ('folded_resnet10t', 3),
          'folded_seresnext26t_32x4d_fold2': ('folded_seresnext26t_32x4d', 2),
          'folded_tv_resnet18_fold2': ('folded_tv_resnet18', 2)}
RESNETX = ('resnetx18', 'resnetx50', 'resnetx_mbconv', 'resnetx_fused', 'resnetx_small', 'resnetx20')
FAMILY = ('folded_resnet10t', 'folded_seresnext26t_32x4d', 'folded_tv_resnet18', 'folded_tv_resnet50')
SAMPLE = (*RESNETX, *FAMILY, *FOLDED)
MODULES = ('archs', 'family_archs', 'resnetx_folded')


def timm_sdist(version:str) -> Path:
    "timm's sdist of `version`, downloaded once with pip into ~/.cache/fastai_resnetx (fails loudly if it cannot be)."
    cache = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'fastai_resnetx' / 'timm-sdist'
    sdist = cache / f'timm-{version}.tar.gz'
    if not sdist.is_file():
        cmd = [sys.executable, '-m', 'pip', 'download', f'timm=={version}', '--no-binary', ':all:', '--no-deps', '-d', str(cache)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode or not sdist.is_file():
            pytest.fail(f"could not download timm {version}'s sdist (its tests are what this runs): `{' '.join(cmd)}` "
                        f"exited with {r.returncode}:\n{r.stderr[-2000:]}", pytrace=False)
    return sdist


def patched_test_models(sdist:Path, version:str) -> str:
    "timm's tests/test_models.py with our modules added to FEAT_INTER_FILTERS (its intermediate tests select by module)."
    with tarfile.open(sdist) as tar: src = tar.extractfile(f'timm-{version}/tests/test_models.py').read().decode()
    anchor = 'FEAT_INTER_FILTERS = ['
    if src.count(anchor) != 1: pytest.fail(f"timm {version}'s test_models.py has no single `{anchor}`: adapt this harness")
    return src.replace(anchor, anchor + ''.join(f'{m!r}, ' for m in MODULES))


CONFTEST = '''
"Registers our archs (and folded ones), runs a sample of them, fills the weight caches with random checkpoints, refuses the network."
import os, socket, urllib.request
def _refuse(*args, **kwargs): raise OSError('network access refused by the test harness')
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = _refuse
urllib.request.urlopen = _refuse

import resnetx_folded   # imports fastai_resnetx, which registers every arch
import torch, torchvision
from pathlib import Path
from safetensors.torch import save_file
import timm
from fastai_resnetx.model.archs import default_cfgs
from fastai_resnetx.model.family_archs import default_cfgs as family_cfgs, folded_source

SAMPLE = {sample!r}
def pytest_collection_modifyitems(config, items):
    "Run the sample only: a test of a model (a tag after its name's dot) in SAMPLE."
    keep = [i for i in items if getattr(i, 'callspec', None) and
            str(i.callspec.params.get('model_name', '')).partition('.')[0] in SAMPLE]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep]); items[:] = keep

def _source_state(arch):
    if arch.startswith('resnetx'): return getattr(torchvision.models, arch.replace('resnetx', 'resnet'))().state_dict()
    lib, src = folded_source(arch)
    return (timm.create_model(src) if lib == 'timm' else getattr(torchvision.models, src)()).state_dict()

for arch in {archs!r}:
    sd = _source_state(arch)
    cfgs = default_cfgs[arch].cfgs if arch in default_cfgs else family_cfgs[arch].cfgs
    for tag, cfg in cfgs.items():
        if cfg.hf_hub_id:   # the Hugging Face cache layout: models--org--name/{{refs/main, snapshots/<rev>/model.safetensors}}
            repo = Path(os.environ['HF_HUB_CACHE']) / ('models--' + cfg.hf_hub_id.replace('/', '--'))
            (repo / 'snapshots' / ('0' * 40)).mkdir(parents=True, exist_ok=True)
            (repo / 'refs').mkdir(exist_ok=True); (repo / 'refs' / 'main').write_text('0' * 40)
            save_file({{k: v.contiguous() for k, v in sd.items()}}, repo / 'snapshots' / ('0' * 40) / 'model.safetensors')
        elif cfg.url:       # the torch hub cache
            path = Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(cfg.url)
            path.parent.mkdir(parents=True, exist_ok=True); torch.save(sd, path)
'''

FOLDED_MODULE = '''
"Folded ResNetX variants, registered with timm for its test suite only."
from timm.models import register_model
from fastai_resnetx.model.archs import default_cfgs as _cfgs, create_resnetx

import timm
# no weights: the arch's own cfg (its input size, pool size, first conv) without its files
default_cfgs = {{name: dict(timm.get_pretrained_cfg(arch).to_dict(), url='', hf_hub_id=None, architecture=None, tag=None)
                for name, (arch, fold) in {folded!r}.items()}}

def _entry(name, arch, fold):
    def fn(pretrained=False, **kwargs):
        if arch.startswith('resnetx'): return create_resnetx(arch, pretrained, fold=fold, **kwargs)
        return timm.create_model(arch, pretrained, fold=fold, **kwargs)
    fn.__name__, fn.__qualname__, fn.__module__ = name, name, __name__
    return register_model(fn)

for _name, (_arch, _fold) in {folded!r}.items(): _entry(_name, _arch, _fold)
'''


@pytest.mark.slow
def test_timm_test_models_passes_on_resnetx(tmp_path):
    version = timm.__version__
    (tmp_path / 'test_models.py').write_text(patched_test_models(timm_sdist(version), version))
    (tmp_path / 'resnetx_folded.py').write_text(FOLDED_MODULE.format(folded=FOLDED))
    weighted = [a for a in RESNETX if a in PRETRAINED_TAGS] + list(FAMILY)   # the sample's archs with pretrained tags
    (tmp_path / 'conftest.py').write_text(CONFTEST.format(archs=weighted, sample=SAMPLE))
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch'), HF_HUB_CACHE=str(tmp_path / 'hf'), HF_HUB_OFFLINE='1',
               OMP_NUM_THREADS='1', PYTHONPATH=str(tmp_path))
    env.pop('GITHUB_ACTIONS', None)   # timm's tests change their model filters on GitHub: run the same set everywhere
    cmd = [sys.executable, '-m', 'pytest', 'test_models.py', '-k', SELECT, '-q', '-p', 'no:cacheprovider', '-p', 'no:xdist',
           '-W', 'ignore::pytest.PytestUnknownMarkWarning', '--junitxml', str(tmp_path / 'report.xml')]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (tmp_path / 'report.xml').is_file(), f"timm's tests did not run:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    cases = ET.parse(tmp_path / 'report.xml').getroot().iter('testcase')
    outcome = {f"{c.get('name')}": next((x.tag for x in c if x.tag in ('failure', 'error', 'skipped')), 'passed') for c in cases}
    failed = sorted(n for n, o in outcome.items() if o in ('failure', 'error'))
    assert not failed, f"{len(failed)} of timm's tests failed: {failed}\n{r.stdout[-6000:]}"
    names = {re.sub(r'\[.*', '', n) for n in outcome}
    # the selection is what we think it is: every test family, each arch (and tag) in it, nothing skipped in silence
    assert {'test_model_forward', 'test_model_backward', 'test_model_default_cfgs', 'test_model_forward_features',
            'test_model_forward_intermediates', 'test_model_forward_intermediates_features', 'test_model_forward_fx',
            'test_model_backward_fx', 'test_model_forward_fx_torchscript', 'test_prune_intermediate_layers_contract',
            'test_model_load_pretrained', 'test_model_features_pretrained'} <= names, names
    tags = [f'{arch}.{tag}' for arch, ts in PRETRAINED_TAGS.items() if arch in RESNETX for tag in ts]
    tags += [n for n in timm.list_models([f'{a}.*' for a in FAMILY], pretrained=True) if n.partition('.')[0] in FAMILY]
    for arch in (*SAMPLE, *tags):
        assert any(n.endswith((f'-{arch}]', f'[{arch}]')) for n in outcome), f'no test of {arch} ran'
    assert [n for n, o in outcome.items() if o == 'skipped'] == [] and r.returncode == 0, r.stdout[-3000:]
    print(f"timm {version} tests/test_models.py -k '{SELECT}' on {len(SAMPLE)} archs: {len(outcome)} passed")
