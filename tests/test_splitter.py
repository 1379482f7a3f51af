"arch_splitter over a zoo of torchvision, timm, fastai and ResNetX models, and through `vision_learner`."
from collections import OrderedDict
from functools import partial
import re

import numpy as np
import pytest, timm, torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer
from fastai.vision.all import (Callback, CrossEntropyLossFlat, DataLoaders, create_body, create_timm_model,
                               create_vision_model,
                               norm_bias_params, vision_learner, xresnet18)
from fastai.vision.learner import _resnet_split
from fastai.vision.models.unet import DynamicUnet
from fastai_resnetx import resnetx18, resnetx34
from fastai_resnetx.inspection.splitter import LayerGroup, arch_groups, arch_splitter, stage_splitter

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Small models on a shared 2-core machine: extra threads only fight each other."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def tiny_vit():
    "A 4-block torchvision ViT on 32 px."
    return VisionTransformer(image_size=32, patch_size=8, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64)
def fastai_model(arch): return create_vision_model(arch, 2, pretrained=False)   # model_meta's cut, as vision_learner
def fastai_timm_model(name, **kw): return create_timm_model(name, 2, pretrained=False, **kw)[0]

TINY_VIT = dict(img_size=32, patch_size=8, depth=4)
# name: (builder, the number of stages the per-stage mode finds)
ZOO = {
    'tv_resnet18':           (tvm.resnet18, 4),
    'tv_mobilenet_v2':       (tvm.mobilenet_v2, 17),          # no stage containers: each inverted residual is one
    'tv_mobilenet_v3_small': (tvm.mobilenet_v3_small, 11),
    'tv_efficientnet_b0':    (tvm.efficientnet_b0, 7),
    'tv_convnext_tiny':      (tvm.convnext_tiny, 4),
    'tv_regnet_y_400mf':     (tvm.regnet_y_400mf, 4),
    'tv_mnasnet0_5':         (tvm.mnasnet0_5, 6),
    'tv_densenet121':        (tvm.densenet121, 4),
    'tv_vit':                (tiny_vit, 4),                   # one stage of 4 encoder blocks: a group per block
    'timm_resnet18':         (partial(timm.create_model, 'resnet18'), 4),
    'timm_convnext_atto':    (partial(timm.create_model, 'convnext_atto'), 4),
    'timm_efficientnet_b0':  (partial(timm.create_model, 'efficientnet_b0'), 7),
    'timm_regnetx_002':      (partial(timm.create_model, 'regnetx_002'), 4),
    'timm_vit':              (partial(timm.create_model, 'vit_tiny_patch16_224', **TINY_VIT), 4),
    'fastai_xresnet18':      (xresnet18, 4),
    'fastai_learner_resnet18': (partial(fastai_model, tvm.resnet18), 4),
    'fastai_learner_timm_convnext': (partial(fastai_timm_model, 'convnext_atto'), 4),
    'fastai_learner_timm_vit': (partial(fastai_timm_model, 'vit_tiny_patch16_224', **TINY_VIT), 4),
    'resnetx18':             (resnetx18, 4),
    'resnetx18_fold3':       (partial(resnetx18, fold=3), 4),
    'fastai_learner_resnetx18': (partial(fastai_model, resnetx18), 4),
}

def forward_order(model, x=None):
    "Modules holding parameters, in the order a forward pass on `x` (default: a 32 px batch) starts them."
    order = []
    hooks = [m.register_forward_pre_hook(lambda m,i: order.append(m) if m not in order else None)
             for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    try:
        with torch.no_grad(): model.eval()(torch.randn(2, 3, 32, 32) if x is None else x)
    finally:
        for h in hooks: h.remove()
    return order

@pytest.fixture(scope='module', params=list(ZOO))
def zoo_model(request):
    builder,n_stages = ZOO[request.param]
    torch.manual_seed(0)
    model = builder()
    return request.param, model, n_stages, forward_order(model)

@pytest.mark.parametrize('n_groups', [2, 3, 4, None])
def test_groups_partition_the_model_in_forward_order(zoo_model, n_groups):
    name,model,n_stages,order = zoo_model
    groups = arch_splitter(model, n_groups)
    assert len(groups) == (n_stages + 2 if n_groups is None else n_groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)), 'a parameter is in two groups'
    assert set(ids) == {id(p) for p in model.parameters()}, 'a parameter is in no group'
    group_of = {id(p): i for i,g in enumerate(groups) for p in g}
    seen = [group_of[id(next(m.parameters(recurse=False)))] for m in order]
    assert seen == sorted(seen), f'{name}: a later group runs before an earlier one: {seen}'
    assert seen[0] == 0 and seen[-1] == len(groups) - 1    # the stem first, the classifier in the head group
    assert isinstance(order[-1], nn.Linear), f'{name}: the last layer with parameters is {type(order[-1]).__name__}'

@pytest.mark.parametrize('arch', [tvm.resnet18, resnetx18], ids=['torchvision', 'resnetx'])
def test_resnet_groups_are_fastais_own(arch):
    "For a resnet (and ResNetX, whose body fastai cuts alike): the groups of fastai's hand-written `_resnet_split`."
    model = fastai_model(arch)
    ours,theirs = arch_splitter(model), _resnet_split(model)
    assert [[id(p) for p in g] for g in ours] == [[id(p) for p in g] for g in theirs]

@pytest.mark.parametrize('arch', [tvm.resnet34, resnetx34], ids=['torchvision', 'resnetx'])
def test_unet_groups_are_encoder_then_decoder(arch):
    "On fastai's DynamicUnet: stem and stages of the encoder, then the decoder; fastai's own resnet U-Net split."
    unet = DynamicUnet(create_body(arch(), pretrained=False, cut=-2), 2, (32, 32))
    groups = arch_groups(unet)
    assert [g.role for g in groups] == ['stem + stages 1-2', 'stages 3-4', 'decoder']
    assert [[id(p) for p in g] for g in arch_splitter(unet)] == [[id(p) for p in g] for g in _resnet_split(unet)]
    assert [g.role for g in arch_groups(unet, None)] == ['stem', 'stage 1', 'stage 2', 'stage 3', 'stage 4', 'decoder']
    assert [g.names[0] for g in groups] == ['layers.0.0', 'layers.0.6', 'layers.1']   # the encoder is `layers[0]`
    with pytest.raises(ValueError, match=r"n_groups=7 is more than DynamicUnet can be split into: found a stem, "
                                         r"4 stages \(containers of repeated blocks\) and a decoder, so at most 6"):
        arch_splitter(unet, 7)

def test_resnetx_groups_are_stage_aware():
    "In a fastai learner model, ResNetX gives stem and stages 1-2, stages 3-4, then fastai's head."
    model = fastai_model(resnetx18)
    body = model[0]                  # conv1 bn1 act1 maxpool stage1..stage4, cut by fastai
    ids = lambda *ms: {id(p) for m in ms for p in m.parameters()}
    expected = [ids(*body[:6]), ids(*body[6:]), ids(model[1])]
    assert [{id(p) for p in g} for g in arch_splitter(model)] == expected
    assert [{id(p) for p in g} for g in stage_splitter(model)][1:5] == [ids(body[i]) for i in range(4, 8)]

def test_stages_agree_with_timms_group_matcher():
    "timm's own coarse `group_matcher` puts the same modules together as the per-stage mode."
    model = timm.create_model('resnet18')
    names = {id(p): n for n,p in model.named_parameters()}
    theirs = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    ours = [sorted(names[id(p)] for p in g) for g in stage_splitter(model)]
    assert ours[:5] == [sorted(v) for k,v in sorted(theirs.items())][:5]
    assert ours[5] == ['fc.bias', 'fc.weight']

def test_group_sizes_and_roles():
    g = arch_groups(tvm.resnet18(), 3)
    assert [x.role for x in g] == ['stem + stages 1-2', 'stages 3-4', 'head']
    assert [x.n_params for x in g] == [683_072, 10_493_440, 513_000]
    assert g[0].names == ['conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2'] and g[2].names == ['avgpool', 'fc']
    # more than 4 names: the first two, '...', the last; counts with thousands separators
    assert [repr(x) for x in g] == ['LayerGroup(stem + stages 1-2: conv1, bn1, ..., layer2; 683,072 params)',
                                    'LayerGroup(stages 3-4: layer3, layer4; 10,493,440 params)',
                                    'LayerGroup(head: avgpool, fc; 513,000 params)']
    fine = arch_groups(tvm.convnext_tiny(), None)
    assert [x.role for x in fine] == ['stem', 'stage 1', 'stage 2', 'stage 3', 'stage 4', 'head']
    assert fine[2].names == ['features.2', 'features.3']       # a downsample goes with the stage after it
    vit = arch_groups(tiny_vit(), None)
    assert vit[0].names[:2] == ['class_token', 'conv_proj'] and vit[-1].names == ['heads']

def test_body_without_head_is_all_stem_and_stages():
    body = nn.Sequential(*list(tvm.resnet18().children())[:-2])    # what fastai's `create_body` cuts off
    g = arch_groups(body, 2)
    assert [x.role for x in g] == ['stem + stages 1-2', 'stages 3-4']

def test_a_tied_weight_is_in_one_group():
    model = nn.Sequential(*[nn.TransformerEncoderLayer(8, 2, 8) for _ in range(3)], nn.Linear(8, 8))
    model[3].weight = model[0].linear1.weight
    groups = arch_splitter(model)
    assert [len(g) for g in groups] == [24, 12, 1]      # 12 tensors a block; the head keeps only its bias
    assert sum(p is model[3].weight for g in groups for p in g) == 1

def test_cannot_split_as_asked():
    two_leaves = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))
    assert [len(g) for g in arch_splitter(two_leaves, 2)] == [2, 2]
    with pytest.raises(ValueError, match=r"n_groups=3 is more than Sequential can be split into: found no stages "
                                         r"\(containers of repeated blocks\) and a head, so at most 2 groups"):
        arch_splitter(two_leaves, 3)
    with pytest.raises(ValueError, match=r"n_groups=7 .* found a stem, 4 stages .* and a head, so at most 6 groups"):
        arch_splitter(tvm.resnet18(), 7)
    with pytest.raises(ValueError, match=r"at most 1 group$"): arch_splitter(nn.Linear(2, 2), None)

def test_bad_input():
    with pytest.raises(TypeError, match=r"model=.*resnet18 \(a function\) is not an nn.Module"):
        arch_splitter(tvm.resnet18)
    with pytest.raises(TypeError, match=r"model='resnet18' \(a str\) is not an nn.Module"): arch_splitter('resnet18')
    for bad in (1, 0, 2.5, '3', True):
        with pytest.raises(ValueError, match=r"`n_groups` must be an integer >= 2 \(or None: one group per stage\)"):
            arch_splitter(nn.Linear(1, 1), bad)

def tiny_dls(n=16, bs=4, size=32):
    x = torch.randn(n, 3, size, size); y = torch.randint(0, 2, (n,))
    return DataLoaders.from_dsets(list(zip(x, y)), list(zip(x[:bs], y[:bs])), bs=bs, device='cpu')

def learner(arch, **kwargs):
    return vision_learner(tiny_dls(), arch, pretrained=False, normalize=False, n_out=2,
                          loss_func=CrossEntropyLossFlat(),
                          splitter=arch_splitter, **kwargs)

@pytest.mark.parametrize('arch', [tvm.resnet18, 'convnext_atto', resnetx18, tvm.mobilenet_v3_small],
                         ids=['torchvision', 'timm', 'resnetx', 'mobilenet'])
def test_freeze_keeps_only_the_last_group_trainable(arch):
    learn = learner(arch)
    learn.freeze()
    groups = learn.opt.param_lists
    assert len(groups) == 3
    norm = {id(p) for p in norm_bias_params(learn.model, with_bias=False)}
    frozen = [p for g in groups[:-1] for p in g if id(p) not in norm]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in groups[-1])
    learn.unfreeze()
    assert all(p.requires_grad for g in groups for p in g)

class RecordLRs(Callback):
    "Each training batch's learning rate, one per parameter group."
    def before_fit(self): self.lrs = []
    def after_batch(self):
        if self.training: self.lrs.append([h['lr'] for h in self.opt.hypers])

@pytest.mark.parametrize('arch', [tvm.resnet18, 'resnet10t'], ids=['torchvision', 'timm'])
def test_discriminative_lrs_one_peak_per_group(arch):
    learn = learner(arch)
    learn.unfreeze()
    rec = RecordLRs()
    learn.fit_one_cycle(1, slice(1e-5, 1e-3), cbs=rec)
    lrs = np.array(rec.lrs)                  # (batches, groups)
    np.testing.assert_allclose(lrs.max(0), [1e-5, 1e-4, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(lrs[:, 1] / lrs[:, 0], 10, rtol=1e-6)   # the same schedule, scaled per group
    np.testing.assert_allclose(lrs[:, 2] / lrs[:, 1], 10, rtol=1e-6)

# Families whose modules are registered in another order than the forward pass runs them (the splitter reads the
# registration order), or that have no blocks at all: what the splitter does there, pinned so a change is noticed.
FAMILY_EXCEPTIONS = {
    'coat': 'order',             # patch_embed1-4 registered together, run between the serial block lists
    'efficientvim': 'order',     # each stage's downsample is registered after its blocks, runs before them
    'twins': 'order',            # patch_embeds, blocks and pos_block are parallel ModuleLists
    'volo': 'order',             # aux_head is registered before the final norm and head
    'vgg': 'too few groups',     # a flat chain of conv/ReLU/pool layers: no blocks, so a body and a head only
}
SIZE_WORDS = ['atto', 'femto', 'pico', 'nano', 'xxxs', 'xxs', 'tiny', 'xs', 't8', 't0', 'small', 's0', 'b0', 'mini',
              '18',
              '10', 'light']

def small_arch(family):
    "The family's arch whose name says it is smallest (built on the meta device, so size costs no memory anyway)."
    def size_rank(name):
        hits = [i for i,w in enumerate(SIZE_WORDS) if w in name]
        if not hits and 's' in re.split(r'[_.]', name): hits = [len(SIZE_WORDS) - 0.5]   # sequencer2d_s before _m, _l
        return (min(hits) if hits else len(SIZE_WORDS), len(name), name)
    return min(timm.list_models(module=family), key=size_rank)

# sequencer's LSTMs step along every row and column, each step a python-level meta kernel (7 s at 224 px): the same
# modules run in the same order at 64 px
SMALLER_INPUT = {'sequencer2d_s': (3, 64, 64)}

def meta_forward_order(model):
    "`forward_order` on the meta device at the model's input size: shapes only, no compute."
    size = SMALLER_INPUT.get(model.pretrained_cfg.get('architecture'), model.pretrained_cfg.get('input_size', (3, 224, 224)))
    return forward_order(model, torch.empty(1, *size, device='meta'))

def family_problems(model):
    "What is wrong with `arch_splitter(model, 3)`: too few groups, an empty one, groups out of forward order, a stem "
    "not in the first, or a first group holding nearly the whole body (discriminative LRs would do nothing)."
    try: groups = arch_groups(model, 3)
    except ValueError: return {'too few groups'}
    problems = set()
    if any(not g.params for g in groups): problems.add('empty')
    group_of = {id(p): i for i,g in enumerate(groups) for p in g.params}
    seen = [group_of[id(next(m.parameters(recurse=False)))] for m in meta_forward_order(model)]
    if seen != sorted(seen): problems.add('order')
    if seen[0] != 0: problems.add('stem')
    if groups[0].n_params > 0.95 * (groups[0].n_params + groups[1].n_params): problems.add('first group is the body')
    return problems

@pytest.mark.slow
def test_one_small_arch_of_every_timm_family():
    "Every timm family (one small arch each, pretrained=False): 3 non-empty groups in forward order, the stem first."
    found = {}
    for family in timm.list_modules():
        with torch.device('meta'): model = timm.create_model(small_arch(family), pretrained=False)
        if problems := family_problems(model): found[family] = ', '.join(sorted(problems))
    assert len(timm.list_modules()) > 90
    assert found == FAMILY_EXCEPTIONS

def test_fastvit_stem_and_stages_are_separate_groups():
    "timm's fastvit_t8: a Sequential stem of blocks is the stem, its four `FastVitStage`s are the stages."
    with torch.device('meta'): model = timm.create_model('fastvit_t8', pretrained=False)
    groups = arch_groups(model, None)
    assert [g.names for g in groups] == [['stem'], ['stages.0'], ['stages.1'], ['stages.2'], ['stages.3', 'final_conv'],
                                         ['head']]
    assert [g.n_params for g in groups] == [sum(p.numel() for p in m.parameters()) for m in
        (model.stem, *model.stages[:3], nn.Sequential(model.stages[3], model.final_conv), model.head)]

# One small synthetic model per splitter rule: each fails if its rule is removed.
def conv_block(c=4):
    "A block: two convs."
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1))
class ConvNormAct(nn.Module):
    "One conv with its norm and activation: a layer, not a block."
    def __init__(self, c=4):
        super().__init__()
        self.conv,self.bn,self.act = nn.Conv2d(c, c, 1),nn.BatchNorm2d(c),nn.ReLU()
    def forward(self, x): return self.act(self.bn(self.conv(x)))
class Branches(nn.Module):
    "A layer with a list of one-conv branches (timm's MobileOneBlock): the list is not a stage."
    def __init__(self, c=4):
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(c)])
    def forward(self, x): return sum(b(x) for b in self.branches)
class MyStage(nn.Module):
    "A stage by its class name, although its children differ (a downsample, then blocks)."
    def __init__(self, c=4):
        super().__init__()
        self.down,self.blocks = nn.Conv2d(c, c, 1),nn.Sequential(conv_block(c), conv_block(c))
    def forward(self, x): return self.blocks(self.down(x))
def head(c=4): return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 2))
def stage(n=2): return nn.Sequential(*[conv_block() for _ in range(n)])

def names(model, n_groups=None):
    "Each group's role and module names."
    return [(g.role, g.names) for g in arch_groups(model, n_groups)]

def test_rule_a_stem_of_blocks_is_the_stem():
    model = nn.Sequential(OrderedDict(stem=stage(), stage1=stage(), stage2=stage(), head=head()))
    assert names(model) == [('stem', ['stem']), ('stage 1', ['stage1']), ('stage 2', ['stage2']), ('head', ['head'])]

def test_rule_one_conv_with_norm_is_a_layer_not_a_block():
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 1), stage1=stage(), stage2=stage(), last=Branches(),
                                      head=head()))
    assert names(model) == [('stem', ['stem']), ('stage 1', ['stage1']), ('stage 2', ['stage2', 'last']),
                            ('head', ['head'])]

def test_rule_a_class_named_stage_is_a_stage():
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 1), s1=MyStage(), s2=MyStage(), head=head()))
    assert names(model) == [('stem', ['stem']), ('stage 1', ['s1']), ('stage 2', ['s2']), ('head', ['head'])]

def test_rule_a_single_stage_gives_one_stage_per_child():
    model = nn.Sequential(OrderedDict(embed=nn.Conv2d(3, 4, 1), blocks=stage(3), head=head()))
    assert names(model) == [('stem', ['embed']), ('stage 1', ['blocks.0']), ('stage 2', ['blocks.1']),
                            ('stage 3', ['blocks.2']), ('head', ['head'])]

def test_rule_repeated_blocks_without_a_stage_container():
    "No container of one block class (mobilenet_v2's `features`): the most repeated blocks are the stages, found even "
    "after a module with no blocks in it."
    features = nn.Sequential(ConvNormAct(), conv_block(), conv_block(), conv_block(), nn.Conv2d(4, 4, 1))
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 1), features=features, head=head()))
    assert names(model) == [('stem', ['stem', 'features.0']), ('stage 1', ['features.1']), ('stage 2', ['features.2']),
                            ('stage 3', ['features.3', 'features.4']), ('head', ['head'])]

def test_rule_repeated_blocks_tie_goes_to_the_first():
    "Two flat containers with 3 blocks each: the first one's blocks are the stages, the second goes with the last."
    flat = lambda: nn.Sequential(ConvNormAct(), conv_block(), conv_block(), conv_block())
    model = nn.Sequential(OrderedDict(a=flat(), b=flat(), head=head()))
    assert names(model) == [('stem', ['a.0']), ('stage 1', ['a.1']), ('stage 2', ['a.2']), ('stage 3', ['a.3', 'b']),
                            ('head', ['head'])]

def test_rule_a_head_that_starts_with_a_pool():
    "What follows the last stage: from the first pooling layer on is the head, also a pool inside a container."
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 1), s1=stage(), s2=stage(), norm=nn.BatchNorm2d(4),
                                      pool=pool, fc=nn.Linear(4, 2)))
    assert names(model) == [('stem', ['stem']), ('stage 1', ['s1']), ('stage 2', ['s2', 'norm']),
                            ('head', ['pool', 'fc'])]

def test_too_many_groups_for_a_body_without_head():
    body = nn.Sequential(*list(tvm.resnet18().children())[:-2])
    with pytest.raises(ValueError, match=r"^n_groups=6 is more than Sequential can be split into: found a stem, "
                                         r"4 stages \(containers of repeated blocks\) and no head with parameters, "
                                         r"so at most 5 groups$"):
        arch_splitter(body, 6)

def test_rule_a_nested_stem_is_the_stem():
    "A backbone that is a container of same-class blocks, the first named `stem`: opened up, the stem stays the stem."
    backbone = nn.Sequential(OrderedDict(stem=stage(), stage1=stage(), stage2=stage()))
    model = nn.Sequential(OrderedDict(backbone=backbone, head=head()))
    assert names(model) == [('stem', ['backbone.stem']), ('stage 1', ['backbone.stage1']),
                            ('stage 2', ['backbone.stage2']), ('head', ['head'])]

class TwoBlocks(nn.Module):
    "A stage neither Sequential nor ModuleList (densenet's `_DenseBlock` is a ModuleDict): two same-class blocks."
    def __init__(self):
        super().__init__()
        self.a,self.b = conv_block(),conv_block()
    def forward(self, x): return self.b(self.a(x))

def test_rule_a_custom_container_of_two_blocks_is_a_stage():
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 1), s1=TwoBlocks(), s2=TwoBlocks(), head=head()))
    assert names(model) == [('stem', ['stem']), ('stage 1', ['s1']), ('stage 2', ['s2']), ('head', ['head'])]

class Wrap(nn.Module):
    "A backbone wrapper with a direct parameter and one child: neither a stage nor a block."
    def __init__(self, backbone):
        super().__init__()
        self.scale,self.backbone = nn.Parameter(torch.ones(1)),backbone
    def forward(self, x): return self.backbone(x) * self.scale

def test_rule_a_stem_two_levels_down_is_the_stem():
    "A `stem` inside a backbone that is no stage (its children differ), inside a wrapper: still the stem, and a "
    "direct parameter of an opened-up module keeps its qualified name."
    backbone = nn.Sequential(OrderedDict(stem=stage(), s1=MyStage(), s2=MyStage()))
    model = nn.Sequential(OrderedDict(net=Wrap(backbone), drop=nn.Dropout(), head=head()))   # 3 parts: no (body, head)
    assert names(model) == [('stem', ['net.scale', 'net.backbone.stem']), ('stage 1', ['net.backbone.s1']),
                            ('stage 2', ['net.backbone.s2', 'drop']), ('head', ['head'])]

def test_rule_a_single_stage_of_two_blocks_or_one():
    "A single stage is opened up into one stage per child from two children on; with one child it stays whole."
    two = nn.Sequential(OrderedDict(embed=nn.Conv2d(3, 4, 1), blocks=stage(2), head=head()))
    assert names(two) == [('stem', ['embed']), ('stage 1', ['blocks.0']), ('stage 2', ['blocks.1']), ('head', ['head'])]
    one = nn.Sequential(OrderedDict(embed=nn.Conv2d(3, 4, 1), blocks=stage(1), head=head()))
    assert names(one, 3) == [('stem', ['embed']), ('stage 1', ['blocks']), ('head', ['head'])]

class PoolStage(nn.Module):
    "A module whose class says it is a stage, with no parameters (a pooling step)."
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(1)
    def forward(self, x): return self.pool(x)

def test_rule_a_stage_without_parameters_is_not_a_stage():
    "It goes with the stage after it, as any module between two stages."
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 1), s1=MyStage(), down=PoolStage(), s2=MyStage(),
                                      head=head()))
    assert names(model) == [('stem', ['stem']), ('stage 1', ['s1']), ('stage 2', ['down', 's2']), ('head', ['head'])]

def test_rule_a_body_without_head_keeps_what_follows_its_last_stage():
    "No classifier: a parameter-free pool after the last stage stays with it (it is no head)."
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 1), s1=stage(), s2=stage(), s3=stage(),
                                      pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))
    assert names(model) == [('stem', ['stem']), ('stage 1', ['s1']), ('stage 2', ['s2']),
                            ('stage 3', ['s3', 'pool', 'flat'])]

def test_a_model_without_stages_is_a_body_and_a_head():
    two_leaves = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))   # fastai's (body, head): the body opened up
    assert names(two_leaves, 2) == names(two_leaves) == [('body', ['0.weight', '0.bias']), ('head', ['1'])]
    with pytest.raises(ValueError, match=r"^n_groups=None is more than Linear can be split into: found no stages "
                                         r"\(containers of repeated blocks\) and no head with parameters, so at most 1 "
                                         r"group$"):
        arch_splitter(nn.Linear(2, 2), None)

def test_a_group_without_parameters_is_an_error():
    model = nn.Sequential(OrderedDict(pool=nn.MaxPool2d(1), drop=nn.Dropout(), s1=stage(), s2=stage(), head=head()))
    assert names(model, 3) == [('stem + stage 1', ['pool', 'drop', 's1']), ('stage 2', ['s2']), ('head', ['head'])]
    with pytest.raises(ValueError, match=r"^n_groups=4: group 0 \(stem: pool, drop\) of Sequential has no "
                                         r"parameters; ask for fewer groups$"):
        arch_splitter(model, 4)

def test_group_repr_names_up_to_four():
    p = [nn.Parameter(torch.zeros(1234))]
    assert repr(LayerGroup(list('abcd'), p, 'stem')) == 'LayerGroup(stem: a, b, c, d; 1,234 params)'
    assert repr(LayerGroup(list('abcde'), p, 'stem')) == 'LayerGroup(stem: a, b, ..., e; 1,234 params)'
