"""Does folding help? A reproducible ablation of ResNetX's `fold`, every run reported (issue 8).

Three experiments, each over the same seeds (seed s: the same data split, data order, augmentation stream and
init RNG state for every model it trains):

1. **folds** (random init): `vision_learner(dls, resnetx_arch(arch, fold=f), pretrained=False)` and
   `fit_one_cycle(epochs, lr)` for every fold in `--folds` (a fold the layout does not allow is skipped and noted).
   Everything else is equal: arch depth and widths, epochs, LR schedule, batch size, augmentation, image size.
2. **equal cost**: folding adds projections, so a fold > 1 model (`--equal-cost-folds`, default 2) is also compared
   with a fold=1 model of matched cost: the arch with one stage widened, chosen (on the meta device) to be the
   closest to the folded model in FLOPs and parameters (the larger of the two relative gaps is minimised).
3. **warm start** (as in the ResNetX source: a ResNet checkpoint, then fastai's `fine_tune`): every fold is
   initialised from the same ResNet checkpoint (`vision_learner(..., pretrained=True)` with the arch's weights set to
   the checkpoint file) and fine-tuned with train()'s schedule, `fine_tune(epochs - 1, base_lr=lr, freeze_epochs=1)`.
   The checkpoint (`--checkpoint`): `auto` uses torchvision's ImageNet weights when they are already in the torch hub
   cache (nothing is downloaded), else `local`: a torchvision ResNet trained here, per seed, on that seed's
   *training split only* (same augmentation, `fit_one_cycle(epochs, lr)`); `random`: a random-init torchvision ResNet
   saved to a file; or a path to a ResNet `.pth`/`.safetensors` file. Projections that a fold adds have no ResNet
   counterpart and keep their random init (their count is recorded). All warm-start runs use ImageNet normalisation,
   the checkpoint's own training included.

Per run the JSON records validation accuracy and loss, the final (smoothed) training loss, parameters and FLOPs of
the model as trained (fastai body + head, one image of `size` px, `model_summary(..., device='meta')`), training
images/s (images seen in the training phases / their wall time, data loading included, validation excluded) and the
seconds. Failed runs are recorded with their error. The JSON is rewritten after every run. The Markdown has mean +- std
per model and, for every comparison, the paired-by-seed difference (mean +- std of the per-seed differences, its 95%
t-interval, and wins/ties/losses).

    python bench/ablation.py                                  # the full ablation on digits, 32 px, 5 seeds
    python bench/ablation.py --data path/to/images --size 64  # any image folder (class folders, or train/ and valid/)
    python bench/ablation.py --quick --out /tmp/a.json --md /tmp/a.md   # smoke run: 1 seed, 1 epoch, 16 px
"""
import argparse, contextlib, datetime, io, json, math, os, platform, shlex, statistics, sys, tempfile, time, warnings
from functools import partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
EXPERIMENTS = ('folds', 'equal_cost', 'warm_start')
# every run record has these keys (a failed run has them too, metrics None, plus 'error')
RUN_FIELDS = ('experiment', 'model', 'arch', 'fold', 'overrides', 'init', 'seed', 'epochs', 'schedule', 'size', 'bs',
              'lr', 'data', 'device', 'n_train', 'n_valid', 'valid_accuracy', 'valid_loss', 'train_loss', 'params',
              'flops', 'train_images', 'train_seconds', 'images_per_s', 'fit_seconds', 'error')
SUMMARY_FIELDS = ('experiment', 'model', 'fold', 'n_runs', 'params', 'flops', 'acc_mean', 'acc_std', 'loss_mean',
                  'loss_std', 'train_loss_mean', 'train_loss_std', 'ips_mean', 'ips_std')
DIFF_FIELDS = ('experiment', 'model', 'baseline', 'n_pairs', 'acc_diff_mean', 'acc_diff_std', 'acc_diff_ci95',
               'loss_diff_mean', 'loss_diff_std', 'wins', 'ties', 'losses', 'verdict')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--folds', default='1,2,3,4', help='comma-separated folds (fold 1 is always added: it is the baseline)')
    p.add_argument('--seeds', default='5', help='a count N (seeds 0..N-1) or a comma-separated list of seeds')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--size', type=int, default=32, help='image size in px')
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--lr', type=float, default=4e-3)
    p.add_argument('--arch', default='resnetx18', help='a ResNetX arch name (resnetx18, resnetx34, ...)')
    p.add_argument('--data', default=None, help='an image folder; default: the built-in digits')
    p.add_argument('--n-items', type=int, default=None, help='digits only: use the first N images')
    p.add_argument('--out', default=str(HERE / 'ablation_results.json'), help='JSON file of every run')
    p.add_argument('--md', default=str(HERE / 'ablation_results.md'), help='Markdown tables')
    p.add_argument('--device', default='auto', help="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default 1 on CPU: on the shared 2-core machine 2 threads ran 5-10x slower)')
    p.add_argument('--equal-cost-folds', default='2', help='the folded models to match at equal cost')
    p.add_argument('--warm-folds', default='1,2,3', help='the folds of the warm-start experiment (fold 1 always added)')
    p.add_argument('--checkpoint', default='auto', help="warm start: 'auto', 'local', 'random' or a ResNet checkpoint file")
    p.add_argument('--skip-equal-cost', action='store_true')
    p.add_argument('--skip-pretrained', action='store_true', help='skip the warm-start experiment')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: 1 seed, 1 epoch, 16 px, 128 digits, bs 32, folds 1,2, warm folds 1,2 (explicit flags win)')
    args = p.parse_args(argv)
    given = {a.split('=')[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith('--')}
    if args.quick:
        for flag, value in (('seeds', '1'), ('epochs', 1), ('size', 16), ('n_items', 128), ('bs', 32), ('folds', '1,2'),
                            ('warm_folds', '1,2')):
            if '--' + flag.replace('_', '-') not in given: setattr(args, flag, value)
    args.folds = sorted({1, *_int_list(args.folds, 'folds')})
    args.seeds = _seed_list(args.seeds)
    args.equal_cost_folds = sorted(set(_int_list(args.equal_cost_folds, 'equal-cost-folds')))
    args.warm_folds = sorted({1, *_int_list(args.warm_folds, 'warm-folds')})
    for name in ('epochs', 'size', 'bs'):
        if getattr(args, name) < 1: p.error(f'--{name} must be >= 1')
    if not 0 < args.lr < 10: p.error('--lr must be in (0, 10)')
    return args


def _int_list(s, name):
    try: values = [int(v) for v in str(s).split(',') if v.strip()]
    except ValueError: raise SystemExit(f'--{name} must be comma-separated integers, got {s!r}')
    if not values or min(values) < 1: raise SystemExit(f'--{name} must hold integers >= 1, got {s!r}')
    return values


def _seed_list(s):
    parts = [v for v in str(s).split(',') if v.strip()]
    try: values = [int(v) for v in parts]
    except ValueError: raise SystemExit(f'--seeds must be a count or comma-separated integers, got {s!r}')
    if len(values) == 1 and ',' not in str(s):
        if values[0] < 1: raise SystemExit(f'--seeds count must be >= 1, got {s!r}')
        return list(range(values[0]))
    if min(values) < 0 or len(set(values)) != len(values): raise SystemExit(f'--seeds must be distinct integers >= 0: {s!r}')
    return values


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
        try: fold_plan(cfg.num_nodes, f); ok.append(f)
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


def run_resnetx(args, device, seed, experiment, model, fold, overrides=None, checkpoint=None):
    "One training run of a ResNetX (random init, or warm-started from `checkpoint`); returns its record."
    from fastai.vision.all import vision_learner, accuracy, set_seed, Normalize, imagenet_stats
    from fastai_resnetx.job.train import resnetx_arch
    overrides = dict(overrides or {})
    rec = _record(args, device, seed, experiment, model, fold, overrides,
                  'random' if checkpoint is None else checkpoint['description'])
    rec['schedule'] = f'fit_one_cycle({args.epochs}, {args.lr})' if checkpoint is None else \
                      f'fine_tune({max(args.epochs - 1, 1)}, base_lr={args.lr}, freeze_epochs=1)'
    dls = make_dls(args, seed, device)
    arch_fn = resnetx_arch(args.arch, fold=fold, **overrides)
    if checkpoint is not None: dls.add_tfms([Normalize.from_stats(*imagenet_stats)], 'after_batch')
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
    if checkpoint is not None:   # fastai keeps only the body's layers: count on a model loaded the same way
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


# ---------------------------------------------------------------------------------------------------- statistics
def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs: return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.)


def _t95(n):
    "Two-sided 95% Student t quantile for n-1 degrees of freedom."
    if n < 2: return math.nan
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, n - 1))
    except ImportError:
        return {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 1.96)


def summarise(runs):
    "Per (experiment, model): mean and std of the metrics over its successful runs."
    groups = {}
    for r in runs:
        if r['error'] is None: groups.setdefault((r['experiment'], r['model']), []).append(r)
    rows = []
    for (exp, model), rs in groups.items():
        row = dict(experiment=exp, model=model, fold=rs[0]['fold'], n_runs=len(rs), params=rs[0]['params'],
                   flops=rs[0]['flops'], overrides=rs[0]['overrides'])
        for key, name in (('valid_accuracy', 'acc'), ('valid_loss', 'loss'), ('train_loss', 'train_loss'),
                          ('images_per_s', 'ips')):
            row[f'{name}_mean'], row[f'{name}_std'] = _mean_std([r[key] for r in rs])
        if exp == 'warm_start': row['new_tensors'] = rs[0].get('new_tensors')
        rows.append(row)
    return rows


def paired_diff(runs, experiment, model, baseline, model_experiment=None):
    "`model` minus `baseline`, paired by seed: accuracy and loss differences, their spread, CI and wins/ties/losses."
    by = lambda exp, m: {r['seed']: r for r in runs if r['experiment'] == exp and r['model'] == m and r['error'] is None}
    a, b = by(model_experiment or experiment, model), by(experiment, baseline)
    seeds = sorted(set(a) & set(b))
    if not seeds: return None
    d_acc = [a[s]['valid_accuracy'] - b[s]['valid_accuracy'] for s in seeds]
    d_loss = [a[s]['valid_loss'] - b[s]['valid_loss'] for s in seeds]
    m, sd = _mean_std(d_acc)
    lm, lsd = _mean_std(d_loss)
    half = _t95(len(seeds)) * sd / math.sqrt(len(seeds)) if len(seeds) > 1 else math.nan
    ci = [m - half, m + half] if not math.isnan(half) else None
    if ci is None: verdict = 'too few seeds to judge'
    elif ci[0] <= 0 <= ci[1]: verdict = 'no difference within noise'
    else: verdict = f'{model} {"better" if m > 0 else "worse"} (95% CI excludes 0)'
    return dict(experiment=experiment, model=model, baseline=baseline, n_pairs=len(seeds), seeds=seeds,
                acc_diff_mean=m, acc_diff_std=sd, acc_diff_ci95=ci, loss_diff_mean=lm, loss_diff_std=lsd,
                wins=sum(d > 0 for d in d_acc), ties=sum(d == 0 for d in d_acc), losses=sum(d < 0 for d in d_acc),
                verdict=verdict)


def analyse(runs, folds, equal_cost_pairs):
    diffs = []
    for f in folds:
        if f == 1: continue
        for exp in ('folds', 'warm_start'):
            d = paired_diff(runs, exp, f'fold={f}', 'fold=1')
            if d: diffs.append(d)
    for folded, matched in equal_cost_pairs:
        d = paired_diff(runs, 'equal_cost', folded, matched, model_experiment='folds')
        if d: diffs.append(d)
    return dict(models=summarise(runs), diffs=diffs)


# ------------------------------------------------------------------------------------------------------ Markdown
def _pm(m, s, fmt='{:.2f}', scale=1.):
    if m is None: return 'n/a'
    return f'{fmt.format(m * scale)} ± {fmt.format(s * scale)}'


def _diff_cell(d, scale=100.):
    if d is None: return ''
    ci = '' if d['acc_diff_ci95'] is None else f" [{d['acc_diff_ci95'][0] * scale:+.2f}, {d['acc_diff_ci95'][1] * scale:+.2f}]"
    return f"{d['acc_diff_mean'] * scale:+.2f} ± {d['acc_diff_std'] * scale:.2f}{ci}"


def _wtl(d): return '' if d is None else f"{d['wins']}/{d['ties']}/{d['losses']}"


def _table(header, rows):
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('--' if i == 0 else '--:' for i in range(len(header))) + '|']
    out += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return out


def to_markdown(result):
    meta, runs, an = result['meta'], result['runs'], result['analysis']
    cfg, mach = meta['config'], meta['machine']
    models = {(m['experiment'], m['model']): m for m in an['models']}
    diffs = {(d['experiment'], d['model']): d for d in an['diffs']}
    data = cfg['data'] or 'digits (scikit-learn, 1,797 8x8 images upscaled)' + \
           (f", first {cfg['n_items']}" if cfg['n_items'] else '')
    lines = [f"# ResNetX fold ablation: {cfg['arch']} on {data}, {cfg['size']} px", '',
             f"`{meta['command']}`", '',
             f"{len(runs)} runs ({sum(r['error'] is not None for r in runs)} failed), every one in the JSON; seeds "
             f"{cfg['seeds']}; {cfg['epochs']} epochs, bs {cfg['bs']}, lr {cfg['lr']}; device {mach['device']}"
             f"{' (' + mach['gpu'] + ')' if 'gpu' in mach else ''}, {mach['torch_threads']} torch thread(s), "
             f"{mach['cpu_count']} CPUs ({mach['cpu']}); torch {mach['torch']}, fastai {mach['fastai']}; "
             f"total {meta.get('total_seconds', 0) / 60:.1f} min; load average {mach.get('loadavg_start')} at the "
             f"start, {meta.get('loadavg_end')} at the end.", '',
             'Accuracy and its differences in percentage points; mean ± std over seeds; a difference is paired by '
             'seed (mean ± std of the per-seed differences, [95% t-interval]); W/T/L: seeds where the model was '
             'better/equal/worse. Params and MFLOPs: the model as trained (fastai body + head), one image. '
             'img/s: training images per second, data loading included'
             f"{' (noisy: the CPUs were shared with other jobs)' if mach['device'] == 'cpu' else ''}.", '']
    for note in meta.get('notes', []): lines += [f'Note: {note}', '']

    def model_row(exp, name, extra=()):
        m = models.get((exp, name))
        if m is None: return None
        return [name, *extra, m['n_runs'], f"{m['params']:,}", f"{m['flops'] / 1e6:.2f}",
                _pm(m['acc_mean'], m['acc_std'], scale=100.), _pm(m['loss_mean'], m['loss_std'], '{:.4f}'),
                _pm(m['train_loss_mean'], m['train_loss_std'], '{:.4f}'), _pm(m['ips_mean'], m['ips_std'], '{:.0f}')]

    head = ['model', 'runs', 'params', 'MFLOPs', 'valid acc %', 'valid loss', 'train loss', 'img/s']
    fold_names = [m['model'] for m in an['models'] if m['experiment'] == 'folds']
    if fold_names:
        lines += ['## Folds, random init (`fit_one_cycle`)', '']
        rows = [model_row('folds', n) + [_diff_cell(diffs.get(('folds', n))), _wtl(diffs.get(('folds', n))),
                                         diffs[('folds', n)]['verdict'] if ('folds', n) in diffs else 'baseline']
                for n in fold_names]
        lines += _table(head + ['Δacc vs fold=1', 'W/T/L', 'verdict'], rows) + ['']
    eq_diffs = [d for d in an['diffs'] if d['experiment'] == 'equal_cost']
    if eq_diffs:
        lines += ['## Equal cost: a folded model vs a fold=1 model of matched FLOPs and params', '',
                  'The matched model is the arch at fold=1 with one stage widened, chosen to be the closest to the '
                  'folded model in both FLOPs and parameters; the folded runs are those of the fold table (same seeds).', '']
        rows = []
        for d in eq_diffs:
            m, b = models.get(('folds', d['model'])), models.get(('equal_cost', d['baseline']))
            ov = (b or {}).get('overrides') or {}
            rows.append(model_row('folds', d['model'], [m['fold'], 'as arch']) + [_diff_cell(d), _wtl(d), d['verdict']])
            rows.append(model_row('equal_cost', d['baseline'], [1, str(tuple(ov.get('widths', ())))]) +
                        ['baseline', '', ''])
        lines += _table(['model', 'fold', 'widths'] + head[1:] + ['Δacc vs matched fold=1', 'W/T/L', 'verdict'], rows)
        lines += ['']
    ws = [m for m in an['models'] if m['experiment'] == 'warm_start']
    if ws:
        lines += ['## Warm start from one ResNet checkpoint (`fine_tune`)', '',
                  f"Checkpoint: {meta.get('checkpoint_kind', '')}", '']
        rows = []
        ck = models.get(('checkpoint', f"torchvision {meta.get('resnet')}"))
        if ck and ck['acc_mean'] is not None:
            rows.append(model_row('checkpoint', ck['model'], ['n/a (the checkpoint itself)']) + ['', '', ''])
        for m in ws:
            d = diffs.get(('warm_start', m['model']))
            rows.append(model_row('warm_start', m['model'], [m.get('new_tensors', '')]) +
                        [_diff_cell(d) if d else 'baseline', _wtl(d), d['verdict'] if d else ''])
        lines += _table(['model', 'new (random) tensors'] + head[1:] + ['Δacc vs fold=1', 'W/T/L', 'verdict'], rows)
        lines += ['']
    lines += ['## Every run', '']
    rows = [[r['experiment'], r['model'], r['seed'], 'failed: ' + r['error'] if r['error'] else
             f"{r['valid_accuracy'] * 100:.2f}", '' if r['error'] else f"{r['valid_loss']:.4f}",
             '' if r['error'] else f"{r['train_loss']:.4f}", '' if r['error'] else f"{r['images_per_s']:.0f}",
             '' if r['error'] else f"{r['train_seconds']:.1f}"] for r in runs]
    lines += _table(['experiment', 'model', 'seed', 'valid acc %', 'valid loss', 'train loss', 'img/s', 'train s'], rows)
    return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------------------------------------------------ main
def _write_json(path, obj):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(obj, indent=1, default=str)); os.replace(tmp, path)


class Ablation:
    "One ablation: its arguments and plan, the run records, and the JSON/Markdown they are written to after each run."
    def __init__(self, args, argv=None):
        from fastai_resnetx import RESNETX_CONFIGS
        if args.arch not in RESNETX_CONFIGS: raise SystemExit(f'--arch must be one of {sorted(RESNETX_CONFIGS)}, got {args.arch!r}')
        self.args, self.t_start = args, time.time()
        self.device = pick_device(args.device)
        self.threads = args.threads or (1 if self.device.type == 'cpu' else torch.get_num_threads())
        self.folds, skipped = valid_folds(args.arch, args.folds)
        self.warm_folds, warm_skipped = valid_folds(args.arch, args.warm_folds)
        skipped.update(warm_skipped)
        self.notes = [f'fold {f} skipped: the {args.arch} layout does not allow it ({why})' for f, why in skipped.items()]
        self.eq_folds = [f for f in args.equal_cost_folds if f in self.folds and f > 1]
        self.equal_cost_pairs, self.matches, self.runs = [], {}, []
        self.result = dict(meta=self._meta(argv), runs=self.runs, analysis=None)

    def _meta(self, argv):
        args = self.args
        argv_list = sys.argv[1:] if argv is None else list(argv)
        return dict(command='python bench/ablation.py' + ''.join(' ' + shlex.quote(a) for a in argv_list),
                    started=datetime.datetime.now().isoformat(timespec='seconds'),
                    machine=machine_info(self.device, self.threads), notes=self.notes, resnet=resnet_name(args.arch),
                    config=dict(arch=args.arch, folds=self.folds, seeds=args.seeds, epochs=args.epochs, size=args.size,
                                bs=args.bs, lr=args.lr, data=args.data, n_items=args.n_items,
                                equal_cost_folds=[] if args.skip_equal_cost else self.eq_folds,
                                checkpoint=None if args.skip_pretrained else args.checkpoint,
                                warm_folds=[] if args.skip_pretrained else self.warm_folds),
                    run_fields=list(RUN_FIELDS))

    def save(self):
        "Write the JSON and Markdown with every record so far and their analysis."
        meta = self.result['meta']
        meta['total_seconds'] = round(time.time() - self.t_start, 1)
        try: meta['loadavg_end'] = [round(v, 2) for v in os.getloadavg()]
        except OSError: pass
        self.result['analysis'] = analyse(self.runs, sorted(set(self.folds) | set(self.warm_folds)), self.equal_cost_pairs)
        _write_json(self.args.out, self.result)
        Path(self.args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(self.args.md).write_text(to_markdown(self.result))

    def attempt(self, fn, fallback, label):
        "Run `fn` for one record (a failure becomes `fallback()` with its error, recorded, not hidden), then save."
        t = time.time()
        try: rec = fn()
        except Exception as e: rec = fallback(); rec['error'] = f'{type(e).__name__}: {e}'
        self.runs.append(rec); self.save()
        status = rec['error'] or f"acc {rec['valid_accuracy'] * 100:.2f}% loss {rec['valid_loss']:.4f} " \
                                 f"{rec['images_per_s']:.0f} img/s"
        print(f'[{(time.time() - self.t_start) / 60:5.1f} min] {label}: {status} ({time.time() - t:.0f} s)', flush=True)
        return rec

    def plan_equal_cost(self):
        "The matched fold=1 models of the equal-cost experiment, found on the meta device before any training."
        args = self.args
        if args.skip_equal_cost or not self.eq_folds: return
        n_classes = make_dls(args, args.seeds[0], self.device).c
        for f in self.eq_folds:
            mc = match_cost(args.arch, f, args.size, n_classes)
            name = f"fold=1 {'x'.join(map(str, mc['overrides']['widths']))}"
            self.matches[f] = (name, mc)
            self.equal_cost_pairs.append((f'fold={f}', name))
        self.result['meta']['equal_cost_matches'] = {f'fold={f}': dict(model=n, **mc) for f, (n, mc) in self.matches.items()}

    def pick_checkpoint(self):
        "The warm start's checkpoint: a given or cached real one (a dict), or None to make one per seed."
        args, real = self.args, None
        if args.skip_pretrained: return None
        if resnet_name(args.arch) is None:
            self.notes.append(f'warm start skipped: {args.arch} has no torchvision ResNet counterpart')
            args.skip_pretrained = True
            return None
        if args.checkpoint == 'auto':
            real = cached_real_checkpoint(args.arch)
            args.checkpoint = 'real' if real else 'local'
        elif args.checkpoint not in ('local', 'random'):
            real = dict(file=Path(args.checkpoint), description=f'the file {args.checkpoint}')
            args.checkpoint = 'real'
        name = resnet_name(args.arch)
        self.result['meta']['checkpoint_kind'] = real['description'] if real else (
            f"a torchvision {name} trained here, per seed, from random init on that seed's training split only "
            f"(validation images never seen), fit_one_cycle({args.epochs}, {args.lr}); NOT ImageNet"
            if args.checkpoint == 'local' else f"a random-init torchvision {name} per seed (not trained); NOT ImageNet")
        return real

    def run_seed(self, seed, real, workdir):
        "Every model of one seed, close in time (fairer img/s): the folds, the matched models, the warm starts."
        args, dev = self.args, self.device
        for f in self.folds:
            self.attempt(lambda: run_resnetx(args, dev, seed, 'folds', f'fold={f}', f),
                         lambda: _record(args, dev, seed, 'folds', f'fold={f}', f, {}, 'random'), f'seed {seed} fold={f}')
        for f, (name, mc) in self.matches.items():
            # its folded counterpart is the 'folds' run of fold f and this seed: compared with it, not retrained
            self.attempt(lambda: run_resnetx(args, dev, seed, 'equal_cost', name, 1, mc['overrides']),
                         lambda: _record(args, dev, seed, 'equal_cost', name, 1, mc['overrides'], 'random'),
                         f'seed {seed} {name}')
        if args.skip_pretrained: return
        ckpt = real if real is not None else self._local_checkpoint(seed, workdir)
        if ckpt is None: return
        for f in self.warm_folds:
            self.attempt(lambda: run_resnetx(args, dev, seed, 'warm_start', f'fold={f}', f, checkpoint=ckpt),
                         lambda: _record(args, dev, seed, 'warm_start', f'fold={f}', f, {}, ckpt['description']),
                         f'seed {seed} warm fold={f}')

    def _local_checkpoint(self, seed, workdir):
        "Train (or save untrained) this seed's torchvision ResNet checkpoint, recording the run; None if it failed."
        args, box = self.args, {}
        def make():
            box['ckpt'], rec = make_local_checkpoint(args, self.device, seed, workdir, train=args.checkpoint == 'local')
            return rec
        self.attempt(make, lambda: _record(args, self.device, seed, 'checkpoint', f'torchvision {resnet_name(args.arch)}',
                                           None, {}, 'random'), f'seed {seed} checkpoint')
        return box.get('ckpt')

    def finish(self):
        "Save the final records and say where they are."
        self.result['meta']['finished'] = datetime.datetime.now().isoformat(timespec='seconds')
        self.save()
        print(f'wrote {self.args.out} and {self.args.md} ({len(self.runs)} records, '
              f'{(time.time() - self.t_start) / 60:.1f} min)')
        return self.result


def main(argv=None):
    "Run the whole ablation (see the module docstring) and return its result."
    ab = Ablation(parse_args(argv), argv)
    torch.set_num_threads(ab.threads)
    warnings.filterwarnings('ignore', category=FutureWarning)
    warnings.filterwarnings('ignore', category=UserWarning, module='fastai')
    ab.plan_equal_cost()
    real = ab.pick_checkpoint()
    with tempfile.TemporaryDirectory(prefix='ablation_ckpt_') as workdir:
        for seed in ab.args.seeds: ab.run_seed(seed, real, workdir)
    return ab.finish()


if __name__ == '__main__':
    main()
