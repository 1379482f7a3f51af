"`from fastai_resnetx import *` after `from fastai.vision.all import *` adds names and replaces none."
import importlib, types

import fastai_resnetx

# the modules the package star-imports; each keeps its own `__all__`
SUBMODULES = ['model.topology', 'model.layers', 'model.blocks', 'model.config', 'model.resnetx', 'model.archs',
              'model.weights', 'inspection.build', 'inspection.arch_summary', 'inspection.splitter', 'inspection.flops',
              'integration.fastai_meta', 'integration.learner_summary', 'integration.distributed',
              'integration.precision', 'job.data', 'job.plots', 'job.train']
# exported by a module but left out of the star import on purpose: the main job's internals and a duplicate
NOT_STARRED = {'ARCHS', 'EpochLines', 'check_input_size', 'fit_batch_size', 'fused_adamw', 'resolve_arch'}


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
    assert added == set(fastai_resnetx.__all__) - set(before)
    assert {'resnetx50', 'arch_splitter', 'model_summary', 'AvgPoolResBlock'} <= added


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


def test_all_is_explicit_and_complete():
    names = fastai_resnetx.__all__
    assert isinstance(names, list) and len(names) == len(set(names))
    missing = [n for n in names if not hasattr(fastai_resnetx, n)]
    assert not missing, f'__all__ names what the package does not define: {missing}'
    public = set()
    for m in SUBMODULES: public |= set(importlib.import_module(f'fastai_resnetx.{m}').__all__)
    unlisted = sorted(public - set(names) - NOT_STARRED)
    assert not unlisted, f'new public names: add them to fastai_resnetx.__all__ (or to NOT_STARRED here): {unlisted}'
