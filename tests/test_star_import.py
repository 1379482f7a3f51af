"`from fastai_resnetx import *` after `from fastai.vision.all import *` adds names and replaces none."
import importlib, subprocess, sys, types

import pytest

import fastai_resnetx

# the modules whose `__all__` the package imports from; each keeps its own `__all__`
SUBMODULES = ['model.topology', 'model.layers', 'model.blocks', 'model.config', 'model.resnetx', 'model.archs',
              'model.family', 'model.family_archs', 'model.weights', 'inspection.build', 'inspection.arch_summary',
              'inspection.splitter', 'inspection.flops',
              'integration.fastai_meta', 'integration.learner_summary', 'integration.distributed',
              'integration.precision', 'job.data', 'job.plots', 'job.train', 'job.idx_data', 'job.tensor_data',
              'job.study', 'job.study_stats', 'job.study_report']
# The user API, written out here (not read from the package): archs, blocks, the fold rule, inspection, fastai's
# entry points.
API = {'resnetx18', 'resnetx34', 'resnetx50', 'resnetx101', 'resnetx152', 'resnetx_mbconv', 'resnetx_fused',
       'resnetx_small', 'resnetx20', 'RESNETX_ARCHS', 'ResNetX', 'ResNetXConfig', 'create_resnetx', 'num_params',
       'Block', 'BasicBlock', 'Bottleneck', 'LinearBottleneck', 'InvertedResidual', 'DepthwiseSeparableConv', 'MBConv',
       'FusedMBConv', 'AvgPoolResBlock', 'ConvNormAct', 'SqueezeExcitation',
       'skip_source', 'fold_plan', 'FoldPlan',
       'arch_summary', 'get_module', 'model_summary', 'arch_splitter', 'arch_groups', 'stage_splitter',
       'plot_topology', 'resnetx_arch', 'load_pretrained', 'BF16MixedPrecision', 'pick_precision', 'distrib_kwargs',
       'fold_resnet', 'folded', 'folded_arch',   # fold timm's and torchvision's ResNets
       'detach_carry'}
# what the star import must not hold: the fold rule's old names (get_pred, layer_diff), the duplicate arch table,
# the training job's generic names
NOT_API = {'get_pred', 'layer_diff', 'ARCHS', 'train', 'digits_dls', 'folder_dls', 'TrainSettings', 'TRAIN_DEFAULTS',
           'read_folder', 'open_image'}


def star_imports(*modules):
    "A fresh namespace after `from m import *` for each of `modules` in order, and a snapshot taken before the last."
    ns = {}
    for m in modules[:-1]: exec(f'from {m} import *', ns)
    before = dict(ns)
    exec(f'from {modules[-1]} import *', ns)
    return before, ns


def test_replaces_no_fastai_name():
    before, after = star_imports('fastai.vision.all', 'fastai_resnetx')
    replaced = sorted(k for k in before if after[k] is not before[k])
    assert not replaced, f'fastai_resnetx replaces these fastai/fastcore names: {replaced}'
    added = set(after) - set(before)
    assert added == API, f'added beyond the API: {sorted(added - API)}; API names missing: {sorted(API - added)}'


def test_exports_no_module():
    _, ns = star_imports('fastai_resnetx')
    modules = sorted(k for k, v in ns.items() if isinstance(v, types.ModuleType))
    assert not modules, f'the star import exports modules: {modules}'
    assert 'warnings' not in ns and 'checks' not in ns and 'model' not in ns


def test_fastai_resblock_still_builds_an_xresnet():
    _, ns = star_imports('fastai.vision.all', 'fastai_resnetx')
    from fastai.layers import ResBlock
    from fastcore.foundation import L
    assert ns['ResBlock'] is ResBlock and ns['L'] is L
    model = ns['XResNet'](ns['ResBlock'], 1, [1, 1, 1, 1], n_out=3)   # raised with our ResBlock in its place
    assert model(ns['torch'].randn(2, 3, 32, 32)).shape == (2, 3)


def test_all_is_the_api_alone():
    "`__all__` is the API; the fold rule's old names and the job are not in it; every module keeps its public names."
    names = fastai_resnetx.__all__
    assert isinstance(names, list) and len(names) == len(set(names)) and set(names) == API
    assert not NOT_API & set(names)
    _, ns = star_imports('fastai_resnetx')
    assert set(ns) - {'__builtins__'} == API
    for m in SUBMODULES:
        module = importlib.import_module(f'fastai_resnetx.{m}')
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f'fastai_resnetx.{m}.__all__ names what it does not define: {missing}'
    from fastai_resnetx.model.topology import get_pred, layer_diff
    from fastai_resnetx.job.train import train, TrainSettings
    assert get_pred(17, 2, 13) == 15 and layer_diff(4, 0, (3, 4, 6, 3)) == 2 and callable(train)

