"Pieces of bench/ablation.py: the machine and device, data, cost matching, training runs, checkpoints."
import os, platform, time, warnings
from pathlib import Path

import torch


HERE = Path(__file__).resolve().parent
# every run record has these keys (a failed run has them too, metrics None, plus 'error')
RUN_FIELDS = ('experiment', 'model', 'arch', 'fold', 'overrides', 'init', 'seed', 'epochs', 'schedule', 'size', 'bs',
              'lr', 'data', 'device', 'n_train', 'n_valid', 'valid_accuracy', 'valid_loss', 'train_loss', 'params',
              'flops', 'train_images', 'train_seconds', 'images_per_s', 'fit_seconds', 'error')

# ------------------------------------------------------------------------------------------------ machine and device
def machine_info(device, threads):
    cpu = platform.processor() or ''
    try:
        cpu = next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name'))
    except (OSError, StopIteration): pass
    import fastai, timm, torchvision
    info = dict(platform=platform.platform(), python=platform.python_version(), cpu=cpu, cpu_count=os.cpu_count(),
                torch=torch.__version__, torchvision=torchvision.__version__, fastai=fastai.__version__,
                timm=timm.__version__, device=str(device), torch_threads=threads)
    if device.type == 'cuda': info['gpu'] = torch.cuda.get_device_name(device)
    try: info['loadavg_start'] = [round(v, 2) for v in os.getloadavg()]
    except OSError: pass
    return info


def pick_device(name):
    if name == 'auto': return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(name)
    if dev.type == 'cuda' and not torch.cuda.is_available(): raise SystemExit(f'--device {name}: CUDA is not available')
    return dev


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------------- pieces
def make_dls(args, seed, device):
    from fastai.vision.all import set_seed
    from fastai_resnetx.job.data import digits_dls, folder_dls
    set_seed(seed, reproducible=True)
    if args.data is None: return digits_dls(size=args.size, bs=args.bs, seed=seed, n_items=args.n_items, device=device)
    return folder_dls(args.data, size=args.size, bs=args.bs, seed=seed, device=device)


def valid_folds(arch, folds):
    "The folds the arch's layout allows, and {fold: reason} for those it does not."
    from fastai_resnetx import RESNETX_CONFIGS
    from fastai_resnetx.model.topology import fold_plan
    cfg, ok, skipped = RESNETX_CONFIGS[arch], [], {}
    for f in folds:
        try: fold_plan(cfg.num_units, f); ok.append(f)
        except ValueError as e: skipped[f] = str(e)
    return ok, skipped


def cost(arch, size, num_classes, **overrides):
    "(params, FLOPs) of the ResNetX `arch` with `overrides` and an `num_classes` classifier, counted on the meta device."
    from fastai_resnetx.model import archs
    from fastai_resnetx.inspection.flops import model_summary
    s = model_summary(getattr(archs, arch), input_size=(1, 3, size, size), device='meta', num_classes=num_classes, **overrides)
    return s.total_params, s.total_flops


def match_cost(arch, fold, size, num_classes, max_extra=0.25, step=2):
    "fold=1 overrides of `arch` (one stage widened by `step` channels at a time) closest in FLOPs and params to `fold`."
    from fastai_resnetx import RESNETX_CONFIGS
    widths = RESNETX_CONFIGS[arch].widths
    target_p, target_f = cost(arch, size, num_classes, fold=fold)
    gap = lambda p, f: max(abs(p - target_p) / target_p, abs(f - target_f) / target_f)
    best = None
    for s in range(len(widths)):
        for extra in range(step, int(widths[s] * max_extra) + 1, step):
            w = tuple(v + extra if i == s else v for i, v in enumerate(widths))
            p, f = cost(arch, size, num_classes, fold=1, widths=w)
            if best is None or gap(p, f) < best[0]: best = (gap(p, f), dict(widths=w), p, f)
            if f > target_f: break        # FLOPs grow with the width: wider only moves away
    return dict(overrides=best[1], params=best[2], flops=best[3], target_params=target_p, target_flops=target_f,
                gap=best[0])


class TrainTimer:
    "A fastai callback (made lazily): wall time and images of the training phases of every fit, validation excluded."
    def __new__(cls, device):
        from fastai.callback.core import Callback
        from fastai.torch_core import find_bs

        class _TrainTimer(Callback):
            order = -100
            def __init__(self): self.seconds, self.images = 0., 0
            def before_train(self): _sync(device); self.t0 = time.perf_counter()
            def after_batch(self):
                if self.training: self.images += find_bs(self.yb)
            def after_train(self): _sync(device); self.seconds += time.perf_counter() - self.t0
        return _TrainTimer()


def _quiet(learn):
    from fastai.callback.progress import ProgressCallback
    if hasattr(learn, 'progress'): learn.remove_cb(ProgressCallback)
    learn.logger = lambda *a, **k: None
    return learn


def _model_cost(model, size):
    from fastai_resnetx.inspection.flops import model_summary
    s = model_summary(model, input_size=(1, 3, size, size), device='meta')
    return s.total_params, s.total_flops


def _finish(learn, timer, t_fit):
    train_loss, valid_loss, acc = (float(v) for v in learn.recorder.values[-1][:3])
    return dict(valid_accuracy=acc, valid_loss=valid_loss, train_loss=train_loss, train_images=timer.images,
                train_seconds=round(timer.seconds, 3), images_per_s=round(timer.images / timer.seconds, 2),
                fit_seconds=round(time.time() - t_fit, 3))


def run_resnetx(args, device, seed, experiment, model, fold, overrides=None, checkpoint=None, warm=None):
    "A training run of a ResNetX (random init, or warm-started from `checkpoint`, a folded `warm` source): its record."
    from fastai.vision.all import vision_learner, accuracy, set_seed, Normalize, imagenet_stats
    from fastai_resnetx.job.train import resnetx_arch
    overrides = dict(overrides or {})
    rec = _record(args, device, seed, experiment, model, fold, overrides,
                  'random' if checkpoint is None else checkpoint['description'])
    rec['schedule'] = f'fit_one_cycle({args.epochs}, {args.lr})' if checkpoint is None else \
                      f'fine_tune({max(args.epochs - 1, 1)}, base_lr={args.lr}, freeze_epochs=1)'
    dls = make_dls(args, seed, device)
    if warm is not None:   # fastai adds the source's own normalisation stats (its `model_meta` entry) itself
        arch_fn = folded_warm_arch(warm, fold, checkpoint['file'])
        rec.update(arch=warm['name'], new_keys=new_keys(warm['folded'], fold))
        rec['new_tensors'] = len(rec['new_keys'])
    else: arch_fn = resnetx_arch(args.arch, fold=fold, **overrides)
    if checkpoint is not None and warm is None: dls.add_tfms([Normalize.from_stats(*imagenet_stats)], 'after_batch')
    set_seed(seed, reproducible=True)                       # same init RNG state for every model of this seed
    timer = TrainTimer(device)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*projections have no counterpart.*')
        # fastai's pretrained path with vision_learner's own `weights=`: arch(weights=file), ResNetX loads that file
        # (model_meta stays as it is: the entry at fold 1 is the package's own `resnetx18`)
        learn = vision_learner(dls, arch_fn, pretrained=checkpoint is not None, metrics=accuracy, cbs=timer,
                               weights=None if checkpoint is None else str(checkpoint['file']))
    _quiet(learn)
    rec.update(n_train=len(dls.train_ds), n_valid=len(dls.valid_ds))
    rec['params'], rec['flops'] = _model_cost(learn.model, args.size)
    rec['body_params'] = sum(p.numel() for p in learn.model[0].parameters())
    if checkpoint is not None and warm is None:   # fastai keeps only the body's layers: count on a model loaded alike
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*projections have no counterpart.*')
            rec['new_tensors'] = len(arch_fn(weights=str(checkpoint['file'])).new_keys)   # projections kept at their init
    set_seed(seed, reproducible=True)                       # same data order and augmentation for every model
    t_fit = time.time()
    if checkpoint is None: learn.fit_one_cycle(args.epochs, args.lr)
    else: learn.fine_tune(max(args.epochs - 1, 1), base_lr=args.lr, freeze_epochs=1)
    rec.update(_finish(learn, timer, t_fit))
    rec['epochs_run'] = args.epochs if checkpoint is None else max(args.epochs - 1, 1) + 1
    return rec


def _record(args, device, seed, experiment, model, fold, overrides, init):
    rec = {k: None for k in RUN_FIELDS}
    rec.update(experiment=experiment, model=model, arch=args.arch, fold=fold, overrides=overrides, init=init, seed=seed,
               epochs=args.epochs, size=args.size, bs=args.bs, lr=args.lr, data=args.data or 'digits', device=str(device))
    return rec


def resnet_name(arch):
    from fastai_resnetx import RESNETX_CONFIGS
    from fastai_resnetx.model.weights import resnet_counterpart
    return resnet_counterpart(RESNETX_CONFIGS[arch])


def cached_real_checkpoint(arch):
    "torchvision's default ImageNet weights of the arch's ResNet, if already in the torch hub cache (no download)."
    from torchvision.models import get_model_weights
    from fastai_resnetx.model.weights import _hub_file
    name = resnet_name(arch)
    if name is None: return None
    weights = get_model_weights(name).DEFAULT
    file = _hub_file(weights.url)
    return dict(file=file, description=f'torchvision {name} {weights} (ImageNet, from the torch hub cache)') \
        if file.is_file() else None


def make_local_checkpoint(args, device, seed, workdir, train=True):
    "A torchvision ResNet trained on this seed's training split (or random-init): a .pth file, and its run record."
    import torchvision
    from fastai.vision.all import Learner, accuracy, set_seed, Normalize, imagenet_stats
    name = resnet_name(args.arch)
    rec = _record(args, device, seed, 'checkpoint', f'torchvision {name}', None, {}, 'random')
    dls = make_dls(args, seed, device)
    dls.add_tfms([Normalize.from_stats(*imagenet_stats)], 'after_batch')
    set_seed(seed, reproducible=True)
    model = getattr(torchvision.models, name)(weights=None, num_classes=dls.c)
    rec.update(n_train=len(dls.train_ds), n_valid=len(dls.valid_ds))
    rec['params'], rec['flops'] = _model_cost(model, args.size)
    if train:
        timer = TrainTimer(device)
        learn = _quiet(Learner(dls, model, metrics=accuracy, cbs=timer))
        set_seed(seed, reproducible=True)
        t_fit = time.time()
        learn.fit_one_cycle(args.epochs, args.lr)
        rec.update(_finish(learn, timer, t_fit), schedule=f'fit_one_cycle({args.epochs}, {args.lr})', epochs_run=args.epochs)
        model = learn.model
        description = (f'torchvision {name} trained here from random init on the seed-{seed} training split '
                       f'({rec["n_train"]} images, fit_one_cycle({args.epochs}, {args.lr}), ImageNet normalisation)')
    else:
        rec.update(schedule='none (random init, saved untrained)', epochs_run=0)
        description = f'torchvision {name}, random init (not trained), seed {seed}'
    file = Path(workdir) / f'{name}_seed{seed}.pth'
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, file)
    rec['checkpoint_file'] = file.name
    return dict(file=file, description=description), rec




# -------------------------------------------------------------------- warm start from a folded timm/torchvision ResNet
def warm_source(name):
    "The --warm-arch `name` (a timm resnet.py arch, 'tv:' + a torchvision ResNet, an optional '.tag') as a dict."
    from fastai_resnetx.model.family_archs import PREFIX, TV_PREFIX, folded_source
    base, _, tag = name.partition('.')
    folded = TV_PREFIX + base[3:] if base.startswith('tv:') else PREFIX + base
    try: family, src = folded_source(folded)
    except ValueError: raise SystemExit(f"--warm-arch must be one of timm's resnet.py archs (timm.list_models("
                                        f"module='resnet')) or 'tv:' + a torchvision ResNet, got {name!r}")
    return dict(name=name, folded=folded, family=family, source=src, tag=tag or None)


def warm_folds(warm, folds):
    "The folds the warm source's layout allows (checked on the meta device), and {fold: reason} for those it does not."
    from fastai_resnetx.integration.fastai_meta import folded_arch
    ok, skipped = [], {}
    for f in folds:
        try: folded_arch(warm['folded'], fold=f); ok.append(f)
        except ValueError as e: skipped[f] = str(e)
    return ok, skipped


def _source_model(warm):
    "The warm source, random init, built by its own library (timm or torchvision), with its 1000-class head."
    import timm, torchvision
    if warm['family'] == 'timm': return timm.create_model(warm['source'])
    return torchvision.models.get_model(warm['source'], weights=None)


def new_keys(folded, fold):
    "The state-dict keys of `folded` at `fold` whose tensors are not the source's own (the projections the fold adds)."
    from fastai_resnetx.model.family import fold_resnet
    from fastai_resnetx.model.family_archs import folded_source
    family, src = folded_source(folded)
    with torch.device('meta'): source = _source_model(dict(family=family, source=src))
    # the fold moves the source's modules: a tensor of the folded model that is not one of the source's objects is new
    ids = {id(t) for t in source.state_dict(keep_vars=True).values()}
    return [k for k, t in fold_resnet(source, fold).state_dict(keep_vars=True).items() if id(t) not in ids]


def folded_warm_arch(warm, fold, file):
    "The package's folded arch of the warm source at `fold`, for fastai, its pretrained weights read from `file`."
    from functools import partial
    from fastai.vision.learner import model_meta
    from fastai_resnetx.integration.fastai_meta import folded_arch
    arch = folded_arch(warm['folded'], fold=fold)
    # fastai calls arch(pretrained=True); the entry point reads `file` through timm's/torchvision's loader
    fn = partial(arch, pretrained_cfg=warm['tag'], pretrained_cfg_overlay=dict(file=str(file)))
    model_meta[fn] = model_meta[arch]   # a new entry for this arch: the shared ones stay as they are
    return fn


def cached_source_checkpoint(warm):
    "The warm source's pretrained weights file if it is already cached (nothing is downloaded), else None."
    from fastai_resnetx.model.weights import _hf_file, _hub_file
    if warm['family'] == 'timm':
        from timm.models import resolve_pretrained_cfg
        cfg = resolve_pretrained_cfg(warm['source'], warm['tag'])
        file = (str(_hub_file(cfg.url)) if cfg.url and _hub_file(cfg.url).is_file() else None) or \
               (_hf_file(cfg) if cfg.hf_hub_id else None)
        what = f"timm {warm['source']}.{cfg.tag}"
    else:
        from torchvision.models import get_model_weights
        enum = get_model_weights(warm['source'])
        weights = next((w for w in enum if w.name.lower() == warm['tag']), None) if warm['tag'] else enum.DEFAULT
        if weights is None: raise SystemExit(f"--warm-arch {warm['name']!r}: torchvision's {warm['source']} has the "
                                             f"tags {[w.name.lower() for w in enum]}")
        file = str(_hub_file(weights.url)) if _hub_file(weights.url).is_file() else None
        what = f"torchvision {warm['source']} {weights}"
    return dict(file=file, description=f'{what} (pretrained, from the local cache)') if file else None


def make_source_checkpoint(args, device, seed, workdir, warm):
    "A random-init warm source (this seed's init RNG state) saved as a state-dict file, and its record."
    from fastai.vision.all import set_seed
    rec = _record(args, device, seed, 'checkpoint', f"{warm['family']} {warm['source']}", None, {}, 'random')
    rec.update(arch=warm['name'], schedule='none (random init, saved untrained)', epochs_run=0)
    set_seed(seed, reproducible=True)
    model = _source_model(warm)
    rec['params'], rec['flops'] = _model_cost(model, args.size)
    file = Path(workdir) / f"{warm['source']}_seed{seed}.pth"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, file)
    rec['checkpoint_file'] = file.name
    description = f"{warm['family']} {warm['source']}, random init (not trained), seed {seed}"
    return dict(file=file, description=description), rec
