"The main job: train an arch on the built-in digits or an image folder, and write the learner, plots and metrics."
import json, math, os, re, shutil, sys, time
from contextlib import contextmanager, ExitStack, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from matplotlib import pyplot as plt
from fastcore.meta import delegates
from fastai.vision.all import (vision_learner, accuracy, set_seed, model_meta, num_distrib, rank_distrib, OptimWrapper,
                               Callback, ProgressCallback)

from ..model.resnetx import num_params
from ..model.config import RESNETX_CONFIGS
from ..model import archs as _resnetx
from .data import (digits_dls, folder_dls, read_folder, read_csv_labels, digits_split_sizes, available_memory,
                   with_resize, display_name)
from .plots import plot_confusion_matrix
from .arch_checks import check_arch, check_input_size, check_pretrained
from .idx_data import load_idx_data, is_fashion_mnist, is_idx_folder
from .tensor_data import TensorImageDL, Augment, idx_dls, predict_dls
from ..integration.distributed import distrib_kwargs
from ..checks import check_int, check_float, check_choice
from ..integration.precision import pick_precision, apply_precision, PRECISIONS
from resnetx_cli.runs import check_out_folder, is_run_folder, OutputFolder, nearest_existing

__all__ = ['TRAIN_DEFAULTS', 'IDX_DEFAULTS', 'IDX_HEAD', 'make_learner', 'TrainSettings', 'resolve_arch',
           'resnetx_arch', 'fused_adamw', 'check_input_size', 'fit_batch_size', 'EpochLines', 'StopOnNonFinite',
           'check_disk_space', 'train']

# chosen on digits (see README, "The main job"): >= 99% validation accuracy within 60 s on 2 CPU cores
TRAIN_DEFAULTS = dict(arch='resnetx18', fold=2, epochs=10, size=24, bs=64, lr=4e-3, seed=42)
# for idx data sets (`--data fashion-mnist`): >= 92.5% test accuracy on Fashion-MNIST within 6 minutes on 2 CPU cores
IDX_DEFAULTS = dict(arch='resnetx_small', fold=1, epochs=5, size=None, bs=256, lr=1e-2, seed=42)
SPLIT_SEED = 42  # the validation split is fixed; `seed` varies initialisation, data order and augmentation


def fused_adamw(params, **kwargs):
    "fastai optimizer: torch's fused AdamW (one kernel per step; fastai's Python Adam costs a third of a small step)."
    return OptimWrapper(params, opt=partial(torch.optim.AdamW, fused=True), **kwargs)


from ..integration.fastai_meta import resnetx_arch   # one `model_meta` entry per configuration


def _folded_name(name:str, arch) -> str:
    "The folded arch of ResNet `name` as `arch_from_name` reads it (torchvision's or timm's), or None if it can't fold."
    from ..model.family_archs import PREFIX, TV_PREFIX, TIMM_SOURCES, TV_SOURCES
    base = name.removeprefix('timm/')
    if getattr(arch, '__module__', '').startswith('torchvision') and base in TV_SOURCES: return TV_PREFIX + base
    if base in TIMM_SOURCES and not getattr(arch, '__module__', '').startswith('torchvision'): return PREFIX + base
    return None


def resolve_arch(name:str, fold:int=None):
    "A name's arch (as `arch_from_name`): ours (with `fold`), torchvision's, or timm's (a name fastai passes to timm)."
    from ..inspection.build import arch_from_name
    arch = arch_from_name(name)
    if name in RESNETX_CONFIGS: return resnetx_arch(name, **({} if fold is None else {'fold': fold}))
    if name.startswith('folded_'):   # a folded timm/torchvision ResNet: `fold` applies too
        from ..integration.fastai_meta import folded_arch
        return folded_arch(name, **({} if fold is None else {'fold': fold}))
    if fold not in (None, 1) and _folded_name(name, arch):   # a timm/torchvision ResNet at fold > 1: its folded arch
        from ..integration.fastai_meta import folded_arch
        return folded_arch(_folded_name(name, arch), fold=fold)
    if fold not in (None, 1):
        raise ValueError(f"`fold` only applies to ResNetX archs ({sorted(RESNETX_CONFIGS)}) and to timm's and "
                         f"torchvision's ResNets (folded: timm.list_models('folded_*')), not to {name!r}")
    return arch


@dataclass
class TrainSettings:
    "What `train` trains and how (None: the data's default, `TRAIN_DEFAULTS` or `IDX_DEFAULTS`; precision: the faster)."
    arch:str=None
    fold:int=None
    epochs:int=None
    size:int=None
    bs:int=None
    lr:float=None
    pretrained:bool=False
    seed:int=None
    precision:str=None

    def checked(self, defaults:dict=TRAIN_DEFAULTS, native_size:int=None):
        "These settings with `defaults` filled in, or a `ValueError` naming the first bad one and what is allowed."
        for k in ('arch', 'epochs', 'size', 'bs', 'lr', 'seed'):
            if getattr(self, k) is None: setattr(self, k, defaults[k] if defaults[k] is not None else native_size)
        if native_size is not None and self.size != native_size:
            raise ValueError(f"`size` {self.size}: an idx data set is used at its own size, {native_size} px")
        check_int('epochs', self.epochs, 1)
        check_int('size', self.size, 8)
        check_int('bs', self.bs, 2)
        check_int('seed', self.seed, 0)
        check_float('lr', self.lr, 0, 10, open_min=True, open_max=True)
        check_choice('precision', self.precision, (*PRECISIONS, None))
        if self.fold is None and self.arch in RESNETX_CONFIGS: self.fold = defaults['fold']
        if self.fold is not None: check_int('fold', self.fold, 1)
        if self.precision is None: self.precision = pick_precision(self.arch, self.size)
        return self


def atomic_write(path:Path, write):
    "Write one file through a temporary file and rename, so an interrupted write leaves no half-written file."
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()


def check_disk_space(model:nn.Module, out:Path, extra:int=4 * 2**20):
    "Refuse, in one line, an `out` whose disk can't take the outputs: `model`'s tensors (export.pkl) and `extra` bytes."
    need = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + extra
    free = shutil.disk_usage(nearest_existing(out)).free
    if need > free:
        raise ValueError(f"`--out` {str(out)!r}: the outputs need about {need / 2**20:.1f} MiB (export.pkl of a "
                         f"{num_params(model) / 1e6:.1f}M-parameter model), "
                         f"{free / 2**20:.1f} MiB are free on its disk")


class StopOnNonFinite(Callback):
    "Stop the run, with one line, at the first training batch whose loss is NaN or infinite."
    order = -5
    def after_loss(self):
        if not self.training: return
        loss = float(self.learn.loss.detach().float().mean())
        if not math.isfinite(loss):
            raise ValueError(f"the training loss became {loss} at epoch {self.epoch + 1}, batch {self.iter + 1}: "
                             f"try a smaller --lr or check the data and starting weights; no outputs were written")


@contextmanager
def one_line_memory_error(size=None, bs=None):
    "Out of memory (CPU or GPU) as a one-line `ValueError` that says which settings to lower."
    try: yield
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as e:
        text = str(e)
        if not isinstance(e, MemoryError) and 'out of memory' not in text and "can't allocate memory" not in text: raise
        raise ValueError(f"out of memory at `size` {size} and `bs` {bs}: use a smaller size or batch size "
                         f"({text.strip().splitlines()[0] if text.strip() else type(e).__name__})") from None


def fit_batch_size(bs:int, n_train:int) -> tuple:
    "(batch size, note): `bs`, or the training images per process when fewer, so that every epoch has a step."
    world = max(num_distrib(), 1)
    per_rank = n_train // world
    if per_rank < 2:
        raise ValueError(f"{n_train} training images are too few for {world} processes: each needs at least 2 "
                         f"(BatchNorm)")
    if bs <= per_rank: return bs, None
    return per_rank, (f"note: `bs` {bs} is more than the {per_rank} training images"
                      f"{' per process' if world > 1 else ''}; using bs {per_rank}")


def _dls(data, s:TrainSettings, n_items:int, out:Path, labels=None, idx=None):
    "DataLoaders (and notes for the user) of `data` (None: the digits; `labels`: a CSV of them), never reading `out`."
    if idx is not None:   # an idx data set, in memory: Fashion-MNIST's clothes may be flipped, digits may not
        augment = Augment(flip=is_fashion_mnist(data))
        return idx_dls(idx, bs=s.bs, augment=augment, seed=s.seed), [
            f"data: {idx.source} ({len(idx.train_images)} training images; the {len(idx.test_images)} test images are "
            f"the validation set){'; augmentation: horizontal flip' if augment.flip else ''}"]
    if data is None:
        bs, note = fit_batch_size(s.bs, digits_split_sizes(n_items)[0])
        return digits_dls(size=s.size, bs=bs, seed=SPLIT_SEED, n_items=n_items), [note]
    items = (read_csv_labels(data, labels, seed=SPLIT_SEED) if labels is not None
             else read_folder(data, seed=SPLIT_SEED, skip=[out]))
    bs, note = fit_batch_size(s.bs, len(items.train_idx))
    return folder_dls(data, size=s.size, bs=bs, items=items), [*items.notes, note]


def _in_chans(dls) -> int: return 1 if isinstance(dls.train, TensorImageDL) else 3   # idx data sets are grey


# fastai's head for a short run from scratch on small grey images: no dropout (with the default 0.25/0.5, resnetx_small
# reached 92.2% on Fashion-MNIST in 5 epochs, training loss above the test loss: it underfits, dropout only slows it)
IDX_HEAD = dict(ps=0.)


def make_learner(dls, arch, pretrained:bool=False, precision:str='fp32', **kwargs):
    "The job's learner: fastai's `vision_learner`, fused AdamW, a stop at a non-finite loss; idx data as IDX_HEAD says."
    idx = isinstance(dls.train, TensorImageDL)
    learn = vision_learner(dls, arch, pretrained=pretrained, metrics=accuracy, opt_func=fused_adamw,
                           cbs=StopOnNonFinite(), n_in=_in_chans(dls), **(IDX_HEAD if idx else {}), **kwargs)
    # channels_last: 16-channel 3x3 convs on 28x28 maps run ~2x faster on CPU in it (oneDNN); resnetx_small trains
    # 14-22% faster (bench/fashion_speed.py). A grey (N, 1, H, W) batch is already in that layout.
    if idx and precision == 'fp32': learn.to_channelslast(use_amp=False)
    return apply_precision(learn, precision)


def _learner(dls, s:TrainSettings, arch, weights:dict):
    learn = make_learner(dls, arch, s.pretrained, s.precision, **weights)
    check_input_size(learn.model, s.size, s.arch, dls.bs, dls.device, _in_chans(dls))
    return learn


def _show(learn, s:TrainSettings):
    from ..inspection.arch_summary import arch_summary
    from ..inspection.flops import model_summary
    print(arch_summary(learn.model[0]))           # the body: the arch's own children, without fastai's head
    print(model_summary(learn.model, input_size=(1, _in_chans(learn.dls), s.size, s.size), max_depth=2))


class EpochLines(Callback):
    "fastai's table, one printed line per epoch (for logs that are files: no progress-bar redraws)."
    order = ProgressCallback.order
    def before_fit(self):
        if rank_distrib() != 0 or hasattr(self.learn, 'gather_preds'): return   # get_preds runs before_fit too
        self.learn.logger = self._line
        print('  '.join(f'{n:>10}' for n in self.recorder.metric_names), flush=True)
    def _line(self, log):
        print('  '.join(f'{v:>10.6f}' if isinstance(v, float) else f'{v!s:>10}' for v in log), flush=True)


@contextmanager
def _log_lines(learn, lines:bool):
    "With `lines`, the progress bar gives way to one line per epoch, and comes back afterwards."
    if not lines or not hasattr(learn, 'progress'):
        yield
        return
    learn.remove_cb(ProgressCallback).add_cb(EpochLines())
    try: yield
    finally:
        learn.remove_cb(EpochLines)
        if not hasattr(learn, 'progress'): learn.add_cb(ProgressCallback())


def fit_recipe(learn, epochs:int, lr:float, pretrained:bool=False):
    "From scratch, one-cycle; pretrained, one epoch on the head then the rest unfrozen (`epochs` in all)."
    if not pretrained: learn.fit_one_cycle(epochs, lr)
    elif epochs == 1: learn.fit_one_cycle(1, slice(lr), pct_start=0.99)   # fine_tune's frozen epoch alone
    else: learn.fine_tune(epochs - 1, base_lr=lr, freeze_epochs=1)


@contextmanager
def _data_parallel(learn):
    "Under torchrun (several processes), fastai's DDP for the block; then this process leaves the process group."
    if num_distrib() <= 1:
        yield
        return
    import fastai.distributed  # noqa: F401  (Learner.distrib_ctx; imports accelerate, which changes warning filters)
    try:
        with learn.distrib_ctx(**distrib_kwargs()): yield
    finally:
        if torch.distributed.is_initialized(): torch.distributed.destroy_process_group()


def _evaluate(learn) -> tuple:
    "(loss, accuracy, predicted classes, true classes) on the whole validation set (gathered from every process)."
    learn.to_fp32()   # evaluated as the exported learner predicts (fp32), whatever precision trained it
    history = {k: getattr(learn.recorder, k) for k in ('lrs', 'iters', 'losses', 'values')}
    preds, targs, losses = learn.get_preds(with_loss=True)
    for k, v in history.items(): setattr(learn.recorder, k, v)   # get_preds starts a new history: keep the training's
    loss = float(losses.mean())
    if not math.isfinite(loss):
        raise ValueError(f"the validation loss is {loss} (the model gives non-finite outputs): no outputs were written")
    return loss, float(accuracy(preds, targs)), preds.argmax(1), targs


def _save_loss_plot(learn, path:Path):
    learn.recorder.plot_loss()
    plt.gcf().savefig(path, format='png', dpi=100)
    plt.close('all')


def _write_outputs(learn, folder:OutputFolder, metrics:dict, predicted, actual):
    "export.pkl, loss.png, confusion_matrix.png and metrics.json, all appearing in `folder` together, or none of them."
    # the digits were resized up front, idx images are held as tensors: the exported learner opens and resizes images
    if isinstance(learn.dls.train, TensorImageDL): learn.dls = predict_dls(learn.dls)
    else: with_resize(learn.dls, metrics['size'])
    text = json.dumps(metrics, indent=2, allow_nan=False)   # NaN is not JSON: refused before anything is written
    writers = {'export.pkl': lambda p: learn.export(p.absolute()), 'loss.png': partial(_save_loss_plot, learn),
               'confusion_matrix.png': lambda p: plot_confusion_matrix(predicted, actual, learn.dls.vocab).savefig(
                   p, format='png', dpi=100),
               'metrics.json': lambda p: p.write_text(text)}
    for name, write in writers.items():
        try: write(folder.temp(name))
        except Exception as e:                   # disk full, quota, I/O error: torch and PIL wrap them in their own
            folder.discard()
            reason = (e.strerror if isinstance(e, OSError) and e.strerror
                      else (str(e).strip().splitlines() or [type(e).__name__])[-1])
            reason = re.sub(r'^\[enforce fail at [^\]]*\]\s*\.?\s*', '', reason)   # torch's C++ source position
            raise OSError(f"writing {name} to {folder.out} failed ({reason}); no outputs were written, the folder's "
                          f"earlier files are kept") from None
        finally: plt.close('all')
    folder.commit(writers)


class _Progress:
    "Where a run is, to say what was kept when it is stopped."
    def __init__(self, out:Path): self.out, self.step, self.learn, self.folder = out, 'starting', None, None
    def where(self) -> str:
        step = self.step
        if self.folder is not None and self.folder.committed: step = 'done'   # a signal that waited for the renames
        if step == 'training' and self.learn is not None and getattr(self.learn, 'n_epoch', None):
            step = f'training (epoch {self.learn.epoch + 1} of {self.learn.n_epoch})'
        if step == 'done': return f'after writing all outputs to {self.out}'
        kept = ("its earlier run's outputs are kept, unchanged" if is_run_folder(self.out) else
                'it was not created' if not self.out.exists() else 'it is unchanged')
        return f'while {step}; nothing was written to {self.out} ({kept})'


def _fit_and_evaluate(learn, s:TrainSettings, show:bool, progress) -> tuple:
    "Fit (DDP under torchrun), then (loss, accuracy, predicted, actual) on all validation images and the fit's seconds."
    with ExitStack() as stack:
        for ctx in [_log_lines(learn, lines=not sys.stdout.isatty())] if show else [learn.no_bar(), learn.no_logging()]:
            stack.enter_context(ctx)
        stack.enter_context(_data_parallel(learn))
        t0 = time.time()
        fit_recipe(learn, s.epochs, s.lr, s.pretrained)
        fit_s, progress.step = time.time() - t0, 'validating'
        return (*_evaluate(learn), fit_s)


def _metrics(s:TrainSettings, data, dls, learn, loss:float, acc:float, fit_s:float) -> dict:
    return dict(arch=s.arch, fold=s.fold, epochs=s.epochs, size=s.size, bs=dls.bs,
                lr=s.lr, pretrained=s.pretrained, precision=s.precision, seed=s.seed,
                data=display_name(str(data)) if data is not None else 'digits', n_train=len(dls.train_ds),
                validation='test set' if isinstance(dls.train, TensorImageDL) else 'held-out split',
                n_valid=len(dls.valid_ds), valid_loss=loss, valid_accuracy=acc, params=num_params(learn.model),
                fit_seconds=round(fit_s, 2))


@delegates(TrainSettings)
def train(data=None, out='runs/latest', n_items:int=None, show:bool=True, save:bool=True, labels=None,
          **kwargs) -> dict:
    "Train on `data` (image folder, `labels` optional CSV; None: digits), outputs to `out`; the metrics and `learner`."
    idx = load_idx_data(data) if data is not None and (is_fashion_mnist(data) or is_idx_folder(data)) else None
    s = TrainSettings(**kwargs).checked(*((IDX_DEFAULTS, idx.size[0]) if idx is not None else (TRAIN_DEFAULTS,)))
    arch = resolve_arch(s.arch, s.fold)
    check_arch(arch, s.arch, s.size)   # before the folder, the data or the weights
    weights = check_pretrained(arch, s.arch) if s.pretrained else {}
    out, main = Path(out), rank_distrib() == 0
    progress, writing = _Progress(out), save and main
    try:
        if writing: check_out_folder(out, None if data is None or idx is not None else Path(data))
        # the folder is created and locked now, before training: a second run into it is refused at once
        with OutputFolder(out) if writing else nullcontext() as folder:
            progress.folder = folder
            progress.step = 'reading the data'
            set_seed(s.seed, reproducible=True)
            dls, notes = _dls(data, s, n_items, out, labels, idx)
            notes = [folder.finished_note() if writing else None, *notes]
            progress.step = 'building the model'
            learn = progress.learn = _learner(dls, s, arch, weights)
            if writing: check_disk_space(learn.model, out)
            if main:
                for note in filter(None, notes): print(note, flush=True)
                if show: _show(learn, s)
            progress.step = 'training'
            loss, acc, predicted, actual, fit_s = _fit_and_evaluate(learn, s, show, progress)
            metrics = _metrics(s, data, dls, learn, loss, acc, fit_s)
            progress.step = 'writing outputs'
            if writing: _write_outputs(learn, folder, metrics, predicted, actual)
            progress.step = 'done'
    except KeyboardInterrupt as e:
        e.kept = progress.where()
        raise
    return {**metrics, 'rank': rank_distrib(), 'learner': learn}
