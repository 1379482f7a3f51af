"""Does folding help? A reproducible ablation of ResNetX's `fold`, every run reported.

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
   `--warm-arch NAME` (a timm resnet.py arch, or `tv:` + a torchvision ResNet) warm-starts from that model instead:
   at each warm fold the package's folded arch (`folded_arch('folded_<NAME>', fold)`: fold 1 is the source itself)
   reads the checkpoint through timm's/torchvision's loader (`auto`: its pretrained weights if cached, nothing is
   downloaded; `random`: a random-init source per seed; or a file of the source's state dict; not `local`). Each run
   records `new_keys`: the folded model's tensors that are not the source's (the projections the fold adds).

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
import argparse, datetime, json, os, shlex, sys, tempfile, time, warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path: sys.path.insert(0, str(HERE))   # its parts sit beside this script, one concern each
from ablation_runs import (RUN_FIELDS, _record, cached_real_checkpoint, cached_source_checkpoint,  # noqa: E402
                           machine_info, make_dls, make_local_checkpoint, make_source_checkpoint, match_cost,
                           pick_device, resnet_name, run_resnetx, valid_folds, warm_folds, warm_source)
from ablation_stats import analyse, paired_diff   # noqa: E402,F401  (paired_diff: tests call it from here)
from ablation_report import to_markdown           # noqa: E402

EXPERIMENTS = ('folds', 'equal_cost', 'warm_start')
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
    p.add_argument('--warm-arch', default=None,
                   help="warm start from this timm resnet.py arch ('resnet50d', 'seresnext26d_32x4d.gluon_in1k') or "
                        "torchvision ResNet ('tv:resnet50'), folded by the package at each warm fold; default: the "
                        "torchvision counterpart of --arch loaded into a ResNetX")
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
        self.warm = warm_source(args.warm_arch) if args.warm_arch else None
        self.warm_folds, warm_skipped = warm_folds(self.warm, args.warm_folds) if self.warm else \
            valid_folds(args.arch, args.warm_folds)
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
                                warm_folds=[] if args.skip_pretrained else self.warm_folds,
                                warm_arch=None if args.skip_pretrained else args.warm_arch),
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
        status = rec['error'] or ('saved untrained' if rec['valid_accuracy'] is None else   # a random checkpoint
                                  f"acc {rec['valid_accuracy'] * 100:.2f}% loss {rec['valid_loss']:.4f} "
                                  f"{rec['images_per_s']:.0f} img/s")
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
        if self.warm: return self._pick_source_checkpoint()
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

    def _pick_source_checkpoint(self):
        "The --warm-arch source's checkpoint: cached pretrained weights, a file of its state dict, or None (random)."
        args, warm, real = self.args, self.warm, None
        if args.checkpoint == 'local':
            raise SystemExit("--checkpoint local does not apply with --warm-arch: use 'auto' (cached pretrained "
                             "weights), 'random' or a state-dict file")
        if args.checkpoint == 'auto':
            real = cached_source_checkpoint(warm)
            if real is None: raise SystemExit(f"--checkpoint auto: the pretrained weights of --warm-arch "
                                              f"{warm['name']!r} are not in the local cache (nothing is downloaded); "
                                              f"pass 'random' or a state-dict file")
        elif args.checkpoint != 'random':
            if not Path(args.checkpoint).is_file(): raise SystemExit(f'--checkpoint {args.checkpoint!r}: no such file')
            real = dict(file=Path(args.checkpoint),
                        description=f"the file {args.checkpoint} ({warm['source']}'s state dict)")
        if real: args.checkpoint = 'real'
        self.result['meta']['checkpoint_kind'] = (real['description'] if real else
            f"a random-init {warm['family']} {warm['source']} per seed (not trained); NOT ImageNet") + \
            f"; folded at each warm fold by the package ({warm['folded']})"
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
            self.attempt(lambda: run_resnetx(args, dev, seed, 'warm_start', f'fold={f}', f, checkpoint=ckpt,
                                             warm=self.warm),
                         lambda: self._warm_record(seed, f, ckpt), f'seed {seed} warm fold={f}')

    def _warm_record(self, seed, fold, ckpt):
        "The record of a failed warm-start run."
        rec = _record(self.args, self.device, seed, 'warm_start', f'fold={fold}', fold, {}, ckpt['description'])
        if self.warm: rec['arch'] = self.warm['name']
        return rec

    def _local_checkpoint(self, seed, workdir):
        "Train (or save untrained) this seed's torchvision ResNet checkpoint, recording the run; None if it failed."
        args, box = self.args, {}
        def make():
            if self.warm: box['ckpt'], rec = make_source_checkpoint(args, self.device, seed, workdir, self.warm)
            else: box['ckpt'], rec = make_local_checkpoint(args, self.device, seed, workdir,
                                                           train=args.checkpoint == 'local')
            return rec
        name = f"{self.warm['family']} {self.warm['source']}" if self.warm else f'torchvision {resnet_name(args.arch)}'
        self.attempt(make, lambda: _record(args, self.device, seed, 'checkpoint', name,
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
