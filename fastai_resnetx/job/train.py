"The main job: train an arch on the built-in digits or an image folder, and write the learner, plots and metrics."
import json, os, time
from functools import partial
from pathlib import Path

import torch
from fastai.vision.all import (vision_learner, accuracy, set_seed, model_meta, ClassificationInterpretation,
                               num_distrib, rank_distrib, OptimWrapper)
import fastai.distributed  # noqa: F401  (Learner.distrib_ctx)

from ..model.resnetx import RESNETX_CONFIGS, num_params
from ..model import resnetx as _resnetx
from .data import digits_dls, folder_dls
from ..integration.distributed import distrib_kwargs

__all__ = ['TRAIN_DEFAULTS', 'resolve_arch', 'resnetx_arch', 'fused_adamw', 'train']

# chosen on digits (see README, "The main job"): >= 99% validation accuracy within 60 s on 2 CPU cores
TRAIN_DEFAULTS = dict(arch='resnetx18', fold=2, epochs=10, size=24, bs=64, lr=4e-3, seed=42)
SPLIT_SEED = 42  # the validation split is fixed; `seed` varies initialisation, data order and augmentation


def fused_adamw(params, **kwargs):
    "fastai optimizer: torch's fused AdamW (one kernel per step; fastai's Python Adam costs a third of a small step)."
    return OptimWrapper(params, opt=partial(torch.optim.AdamW, fused=True), **kwargs)


from ..integration.fastai_meta import resnetx_arch   # one `model_meta` entry per configuration


def resolve_arch(name:str, fold:int=None):
    "The arch a name means (`arch_from_name`'s rule): ours (with `fold`), torchvision's, or timm's (a name fastai passes to timm)."
    from ..inspection.build import arch_from_name
    arch = arch_from_name(name)
    if name in RESNETX_CONFIGS: return resnetx_arch(name, **({} if fold is None else {'fold': fold}))
    if fold not in (None, 1):
        raise ValueError(f"`fold` only applies to ResNetX archs ({sorted(RESNETX_CONFIGS)}), not to {name!r}")
    return arch


def _check(name, value, kind, minimum):
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        raise ValueError(f"`{name}` must be a {kind.__name__} >= {minimum}, got {value!r}")


def _atomic(path:Path, write):
    "Write through a temporary file and rename, so an interrupted run leaves no half-written file."
    tmp = path.with_name(path.name + '.tmp')
    try:
        write(tmp); os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()


def _save_outputs(learn, out:Path, metrics:dict):
    import matplotlib; matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / 'export.pkl', lambda p: learn.export(p.absolute()))
    learn.recorder.plot_loss()
    _atomic(out / 'loss.png', lambda p: plt.gcf().savefig(p, format='png', dpi=100)); plt.close('all')
    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_confusion_matrix(figsize=(6, 6), dpi=100)
    _atomic(out / 'confusion_matrix.png', lambda p: plt.gcf().savefig(p, format='png', dpi=100)); plt.close('all')
    _atomic(out / 'metrics.json', lambda p: p.write_text(json.dumps(metrics, indent=2)))


def train(data=None, arch:str=TRAIN_DEFAULTS['arch'], fold:int=None, epochs:int=TRAIN_DEFAULTS['epochs'],
          size:int=TRAIN_DEFAULTS['size'], bs:int=TRAIN_DEFAULTS['bs'], lr:float=TRAIN_DEFAULTS['lr'],
          pretrained:bool=False, out='runs/latest', seed:int=TRAIN_DEFAULTS['seed'], n_items:int=None,
          show:bool=True, save:bool=True) -> dict:
    "Train `arch` on `data` (None: the built-in digits; `fold` None: the default for ResNetX), write outputs to `out`."
    t0 = time.time()
    _check('epochs', epochs, int, 1); _check('size', size, int, 8); _check('bs', bs, int, 1); _check('seed', seed, int, 0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 10:
        raise ValueError(f"`lr` must be a number in (0, 10), got {lr!r}")
    if fold is None and arch in RESNETX_CONFIGS: fold = TRAIN_DEFAULTS['fold']
    if fold is not None: _check('fold', fold, int, 1)
    arch_fn = resolve_arch(arch, fold)
    set_seed(seed, reproducible=True)
    dls = digits_dls(size=size, bs=bs, seed=SPLIT_SEED, n_items=n_items) if data is None else \
          folder_dls(data, size=size, bs=bs, seed=SPLIT_SEED)
    learn = vision_learner(dls, arch_fn, pretrained=pretrained, metrics=accuracy, opt_func=fused_adamw)
    main = rank_distrib() == 0
    if show and main:
        from ..inspection.arch_summary import arch_summary
        from ..inspection.flops import model_summary
        body = learn.model[0][0] if arch in RESNETX_CONFIGS else learn.model
        print(arch_summary(body))
        ms = model_summary(learn.model, input_size=(1, 3, size, size), max_depth=2)
        print(ms)
    if not show and hasattr(learn, 'progress'): learn.remove_cb(learn.progress)
    fit = (lambda: learn.fine_tune(epochs - 1 if epochs > 1 else 1, base_lr=lr, freeze_epochs=1)) if pretrained \
          else (lambda: learn.fit_one_cycle(epochs, lr))
    t_fit = time.time()
    if num_distrib() > 1:
        with learn.distrib_ctx(**distrib_kwargs()): fit()
        # validation and outputs are single-process work (same weights on every rank): leave the process group
        torch.distributed.barrier(); torch.distributed.destroy_process_group()
        os.environ['WORLD_SIZE'] = '1'
    else: fit()
    fit_s = time.time() - t_fit
    loss, acc = learn.validate()
    metrics = dict(arch=arch, fold=fold if arch in RESNETX_CONFIGS else None, epochs=epochs, size=size, bs=bs, lr=lr,
                   pretrained=pretrained, seed=seed, data=str(data) if data is not None else 'digits',
                   n_train=len(dls.train_ds), n_valid=len(dls.valid_ds), valid_loss=float(loss),
                   valid_accuracy=float(acc), params=num_params(learn.model), fit_seconds=round(fit_s, 2),
                   total_seconds=round(time.time() - t0, 2))
    if save and main: _save_outputs(learn, Path(out), metrics)
    metrics['learner'] = learn
    return metrics
