"""timm's optimizer factory with layer-wise lr decay over ResNetX's `group_matcher`: the learning rate of each layer.

`create_optimizer_v2(model, 'adamw', lr=1e-3, layer_decay=0.7)` puts the stem in layer 0, each unit in a layer of its
own (`^stage(\\d+)\\.(\\d+)`), and the classifier (matched by nothing) last, with `lr_scale = 0.7 ** (last - layer)`;
timm's schedulers multiply each group's lr by it. Run: `python bench/timm_layer_decay.py [arch] [fold]`."""
import re, sys

import timm
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

import fastai_resnetx  # noqa: F401  (registers the archs with timm)


def _label(name:str) -> str:
    "The layer a parameter belongs to, as `group_matcher` groups them: 'stage2.3' for a unit, else its top module ('conv1')."
    unit = re.match(r'stage\d+\.\d+', name)
    return unit[0] if unit else name.split('.')[0]


def layer_decay_table(model, lr:float=1e-3, layer_decay:float=0.7) -> list:
    "One row per layer, input to output: (its modules, number of parameters, lr_scale, lr after a scheduler step)."
    opt = create_optimizer_v2(model, 'adamw', lr=lr, layer_decay=layer_decay)
    scheduler, _ = create_scheduler_v2(opt, 'cosine', num_epochs=10)
    scheduler.step(0)   # timm's schedulers set each group's lr to base lr x lr_scale
    names = {id(p): n for n, p in model.named_parameters()}
    layers = {}   # lr_scale -> [labels, number of parameters, lr]; a layer has two groups (with and without weight decay)
    for g in opt.param_groups:
        row = layers.setdefault(g['lr_scale'], [[], 0, g['lr']])
        row[0] += [l for l in dict.fromkeys(_label(names[id(p)]) for p in g['params']) if l not in row[0]]
        row[1] += sum(p.numel() for p in g['params'])
    return [('+'.join(labels), n, scale, group_lr) for scale, (labels, n, group_lr) in sorted(layers.items())]


def main(arch:str='resnetx50', fold:int=1):
    model = timm.create_model(arch, fold=fold)
    print(f"{arch}, fold={fold}: create_optimizer_v2(m, 'adamw', lr=1e-3, layer_decay=0.7)")
    print(f"{'layer':<12} {'params':>10} {'lr_scale':>9} {'lr':>10}")
    for module, n, scale, group_lr in layer_decay_table(model):
        print(f"{module:<12} {n:>10,} {scale:>9.4f} {group_lr:>10.3g}")


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'resnetx50', int(sys.argv[2]) if len(sys.argv) > 2 else 1)
