"""Throughput benchmark (not a test): training and inference images/s of `resnetx50` at folds 1, 2, 3 against
torchvision `resnet50`, timm `resnet50` and fastai `xresnet50`.

All models live in one process and are timed *interleaved*: every round times every (model, mode) pair once, in
a freshly shuffled order, so a slow spell on a shared machine hits all models alike. The table reports the median
images/s over the rounds, its spread (interquartile range, % of the median), the ratio of medians to torchvision's
resnet50 and the median of the per-round (paired) ratios. Random data in memory, random init, no downloads.

    python bench/throughput.py --device cpu                 # bs 8 at 128 px, fp32: 2 to 5 minutes on 2 cores
    python bench/throughput.py --device cuda                # bs 64 at 224 px, channels_last + bf16 autocast
    python bench/throughput.py --device cuda --amp fp16 --bs 256 --out cuda_fp16.md

Mixed precision: `--precisions` times every model once per precision in the same interleaved rounds and
adds each row's ratio to the same model's first precision ("vs fp32", paired per round). `bf16_cl` = bf16 autocast
with model and batch in channels_last (what `learn.to_bf16()` does on CPU); `fp32_cl` measures channels_last alone.
The quiet-machine run (minutes on 2 cores with AMX bf16; without bf16 instructions bf16 is 5-30x slower and the 64 and
128 px runs take about 45 and 70 min on 2 cores):

    python bench/throughput.py --device cpu --models tv_resnet50,resnetx50_f1,resnetx50_f2,resnetx50_f3 --precisions fp32,fp32_cl,bf16_cl --size 64 --bs 16 --rounds 9 --out bench/cpu_bf16_64.md
    python bench/throughput.py --device cpu --models tv_resnet50,resnetx50_f1,resnetx50_f2,resnetx50_f3 --precisions fp32,fp32_cl,bf16_cl --size 128 --bs 8 --rounds 9 --out bench/cpu_bf16_128.md
    python bench/throughput.py --device cpu --models resnetx18_f2 --precisions fp32,fp32_cl,bf16_cl,bf16 --size 24 --bs 64 --n-out 10 --rounds 15 --out bench/cpu_bf16_digits.md

(on a busy machine add `--threads 1 --clock process`; the last one is the default digits run of `resnetx train`, which decides
`pick_precision`'s default for it: see `fastai_resnetx/integration/precision.py`).

What folding costs against its FLOPs (folds 1-4 with FLOPs ratios, interquartile spread of the paired ratios) and what
bf16's NaN/inf gradient check costs in a step, both in one run: `bench/fold_cost.py`, built on this script.

Training step = zero_grad, forward, cross-entropy, backward, SGD (momentum 0.9) step (with a GradScaler for fp16).
Inference = forward in eval mode under `torch.inference_mode()`.
"""
import argparse, gc, json, os, platform, random, shlex, statistics, sys, time
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

BASELINE = 'tv_resnet50'
ALL_MODELS = ['tv_resnet50', 'resnetx50_f1', 'resnetx50_f2', 'resnetx50_f3', 'timm_resnet50', 'fastai_xresnet50']
PRECISIONS = {'fp32': (None, False), 'fp32_cl': (None, True), 'bf16': ('bf16', False), 'bf16_cl': ('bf16', True),
              'fp16': ('fp16', False), 'fp16_cl': ('fp16', True)}  # name: (autocast dtype, channels_last)
LABELS = {'tv_resnet50': 'torchvision resnet50', 'resnetx50_f1': 'resnetx50 fold=1', 'resnetx50_f2': 'resnetx50 fold=2',
          'resnetx50_f3': 'resnetx50 fold=3', 'resnetx50_f4': 'resnetx50 fold=4',
          'resnetx50_f1_inplace': 'resnetx50 fold=1, in-place patch',
          'timm_resnet50': 'timm resnet50', 'fastai_xresnet50': 'fastai xresnet50'}


def build(name:str, n_out:int) -> nn.Module:
    "A randomly initialised model by benchmark name (imports are lazy so one missing library only drops its model)."
    if name == 'tv_resnet50':
        from torchvision.models import resnet50
        return resnet50(weights=None, num_classes=n_out)
    arch, sep, rest = name.partition('_f')
    if arch.startswith('resnetx') and sep:
        import fastai_resnetx
        fold, _, variant = rest.partition('_')
        m = getattr(fastai_resnetx, arch)(fold=int(fold))
        m.reset_classifier(n_out)  # timm's interface: independent of the constructor's name for the class count
        if variant == 'inplace': return inplace_variant(m)
        if variant: raise ValueError(f"unknown resnetx50 variant {variant!r} in {name!r}")
        return m
    if name == 'timm_resnet50':
        import timm
        return timm.create_model('resnet50', pretrained=False, num_classes=n_out)
    if name == 'fastai_xresnet50':
        from fastai.vision.models.xresnet import xresnet50
        return xresnet50(pretrained=False, n_out=n_out)
    raise ValueError(f"unknown model {name!r}; choose from {ALL_MODELS} (or resnetx<depth>_f<k> for any depth and fold k)")


def _inplace_unit_forward(self, x, skip):
    out = self.branch(x)
    out += self.shortcut(skip)  # the branch output is fresh (its last BatchNorm's), so adding in place is safe
    return self.act(out)


def inplace_variant(m:nn.Module) -> nn.Module:
    """What-if for `resnetx50_f<k>_inplace`: every ReLU in place and the residual add in place, as torchvision's
    Bottleneck does (`out += identity; out = self.relu(out)`). Same weights, same outputs; a benchmark-only patch."""
    import types
    for mod in m.modules():
        if isinstance(mod, nn.ReLU): mod.inplace = True
        if type(mod).__name__ == 'FoldUnit': mod.forward = types.MethodType(_inplace_unit_forward, mod)
    return m


def num_params(m:nn.Module) -> int: return sum(p.numel() for p in m.parameters())


class Runner:
    "One model with its optimizer, and one timed training or inference call of `iters` steps."
    def __init__(self, name, args, device, x, y, amp=None, channels_last=None):
        "`amp`, `channels_last`: this runner's precision (default: `--amp`, `--channels-last`)."
        amp, channels_last = (args.amp, args.channels_last) if channels_last is None else (amp, channels_last)
        self.name, self.args, self.device, self.y = name, args, device, y
        self.x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        torch.manual_seed(0)
        m = build(name, args.n_out).to(device)
        if channels_last: m = m.to(memory_format=torch.channels_last)
        self.model, self.params = m, num_params(m)
        self.opt = torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
        self.amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(device.type) if amp == 'fp16' else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_steps(self, n):
        m, opt = self.model, self.opt
        m.train()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with self.autocast(): loss = F.cross_entropy(m(self.x), self.y)
            if self.scaler is None:
                loss.backward(); opt.step()
            else:
                self.scaler.scale(loss).backward(); self.scaler.step(opt); self.scaler.update()
        return loss

    def infer_steps(self, n):
        m = self.model
        m.eval()
        with torch.inference_mode(), self.autocast():
            for _ in range(n): out = m(self.x)
        return out

    def sync(self):
        if self.device.type == 'cuda': torch.cuda.synchronize(self.device)

    def timed(self, mode, iters) -> float:
        "Images/s of `iters` steps of `mode` ('train' or 'infer'), timed between device synchronisations."
        fn = self.train_steps if mode == 'train' else self.infer_steps
        clock = time.process_time if self.args.clock == 'process' else time.perf_counter
        self.sync()
        t0 = clock()
        fn(iters)
        self.sync()
        return iters * self.args.bs / (clock() - t0)


def machine_info(device) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
                torch_threads=torch.get_num_threads())
    try:
        with open('/proc/cpuinfo') as f:
            names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
        if names: info['cpu'] = names[0]
    except OSError: pass
    try: info['loadavg'] = os.getloadavg()
    except OSError: pass
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    for lib in ('torchvision', 'timm', 'fastai'):
        try: info[lib] = __import__(lib).__version__
        except Exception: pass
    return info


def iqr_pct(xs) -> float:
    "Interquartile range as % of the median (a noise gauge)."
    if len(xs) < 2: return 0.
    q = statistics.quantiles(xs, n=4, method='inclusive')
    return 100 * (q[2] - q[0]) / statistics.median(xs)


def split_key(key:str):
    "A runner's key is the model name, or `model@precision` with `--precisions`."
    name, _, prec = key.partition('@')
    return name, prec or None


def label_of(name:str) -> str:
    if name in LABELS: return LABELS[name]
    arch, sep, rest = name.partition('_f')
    return f"{arch} fold={rest.replace('_', ', ')}" if arch.startswith('resnetx') and sep else name


def _ratios(row, mode, xs, ref, tag):
    row[f'{mode}_{tag}'] = statistics.median(xs) / statistics.median(ref)
    row[f'{mode}_{tag}_paired'] = statistics.median(a / b for a, b in zip(xs, ref))


def summarise(runs:dict, samples:dict, modes, ref_prec:str=None) -> list:
    """One row per runner: median images/s, IQR %, ratio of medians to the baseline (in the same precision) and median
    of paired ratios; with precisions, the same two ratios against the same model in `ref_prec`."""
    rows = []
    for key, r in runs.items():
        name, prec = split_key(key)
        row = dict(model=key, label=label_of(name) + (f' [{prec}]' if prec else ''), params=r.params)
        base_key, ref_key = (f'{BASELINE}@{prec}', f'{name}@{ref_prec}') if prec else (BASELINE, None)
        for mode in modes:
            xs = samples[key][mode]
            row[f'{mode}_ips'] = statistics.median(xs)
            row[f'{mode}_iqr_pct'] = iqr_pct(xs)
            if base_key in samples:
                base = samples[base_key][mode]
                row[f'{mode}_ratio'] = row[f'{mode}_ips'] / statistics.median(base)
                row[f'{mode}_paired_ratio'] = statistics.median(a / b for a, b in zip(xs, base))
            if ref_key in samples: _ratios(row, mode, xs, samples[ref_key][mode], 'vs_ref')
        rows.append(row)
    return rows


def markdown(rows, modes, header_lines, ref_prec:str=None) -> str:
    has_base = any(f'{modes[0]}_ratio' in r for r in rows)
    has_ref = any(f'{modes[0]}_vs_ref' in r for r in rows)
    cols = ['model', 'params (M)']
    for mode in modes:
        cols += [f'{mode} img/s (IQR %)'] + ([f'{mode} vs tv', f'{mode} vs tv, paired'] if has_base else [])
        cols += [f'{mode} vs {ref_prec}', f'{mode} vs {ref_prec}, paired'] if has_ref else []
    lines = [*header_lines, '', '| ' + ' | '.join(cols) + ' |', '|' + '|'.join(['---'] + ['---:'] * (len(cols) - 1)) + '|']
    for r in rows:
        cells = [r['label'], f"{r['params'] / 1e6:.2f}"]
        for mode in modes:
            cells.append(f"{r[f'{mode}_ips']:.1f} ({r[f'{mode}_iqr_pct']:.1f})")
            if has_base: cells += [f"{r[f'{mode}_ratio']:.3f}", f"{r[f'{mode}_paired_ratio']:.3f}"] if f'{mode}_ratio' in r else ['', '']
            if has_ref: cells += [f"{r[f'{mode}_vs_ref']:.3f}", f"{r[f'{mode}_vs_ref_paired']:.3f}"] if f'{mode}_vs_ref' in r else ['', '']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='auto (default): cuda when available')
    p.add_argument('--bs', type=int, default=None, help='batch size (default: 8 on CPU, 64 on CUDA)')
    p.add_argument('--size', type=int, default=None, help='image size in px (default: 128 on CPU, 224 on CUDA)')
    p.add_argument('--rounds', type=int, default=None, help='timed rounds (default: 11 on CPU, 15 on CUDA)')
    p.add_argument('--warmup', type=int, default=None, help='untimed rounds first (default: 1 on CPU, 2 on CUDA)')
    p.add_argument('--iters', type=int, default=None, help='steps per model per mode per round (default: 1 on CPU, 10 on CUDA)')
    p.add_argument('--models', default=','.join(ALL_MODELS),
                   help=f'comma-separated, from {ALL_MODELS}, or resnetx50_f<k>, or resnetx50_f<k>_inplace (in-place '
                        f'ReLU and residual add patched in); baseline for ratios: {BASELINE}')
    p.add_argument('--modes', default='train,infer', help='train, infer or both (default: both)')
    p.add_argument('--amp', default=None, choices=['none', 'bf16', 'fp16'], help='autocast dtype (default: bf16 on CUDA, none on CPU)')
    p.add_argument('--precisions', default=None,
                   help=f'comma-separated, from {list(PRECISIONS)}: every model once per precision, interleaved, with '
                        'ratios to the first one (replaces --amp and --channels-last)')
    p.add_argument('--channels-last', dest='channels_last', action='store_true', default=None, help='default on CUDA')
    p.add_argument('--no-channels-last', dest='channels_last', action='store_false')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s own; on a shared CPU 1 is steadier)')
    p.add_argument('--clock', default='wall', choices=['wall', 'process'],
                   help="wall (default), or process: this process's CPU time (CPU only; with --threads 1 it ignores time spent descheduled on a busy machine)")
    p.add_argument('--n-out', dest='n_out', type=int, default=1000, help='classes (default: 1000)')
    p.add_argument('--lr', type=float, default=0.01, help='SGD learning rate (default: 0.01)')
    p.add_argument('--seed', type=int, default=0, help='seeds the data and the per-round shuffles (default: 0)')
    p.add_argument('--out', default=None, help='write the Markdown table here; the raw samples go beside it as .json')
    args = p.parse_args(argv)
    if args.precisions is not None:
        if args.amp is not None or args.channels_last is not None: p.error('--precisions replaces --amp and --channels-last: give one or the other')
        args.precisions = [q.strip() for q in args.precisions.split(',') if q.strip()]
        bad = [q for q in args.precisions if q not in PRECISIONS]
        if bad or not args.precisions: p.error(f'--precisions: unknown {bad}; choose from {list(PRECISIONS)}')
    if args.device == 'auto': args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available(): p.error('--device cuda but no CUDA device is available')
    cuda = args.device == 'cuda'
    for k, gpu, cpu in [('bs', 64, 8), ('size', 224, 128), ('rounds', 15, 11), ('warmup', 2, 1), ('iters', 10, 1),
                        ('amp', 'bf16', 'none'), ('channels_last', True, False)]:
        if getattr(args, k) is None: setattr(args, k, gpu if cuda else cpu)
    args.amp = None if args.amp == 'none' else args.amp
    args.models = [m.strip() for m in args.models.split(',') if m.strip()]
    args.modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    if not set(args.modes) <= {'train', 'infer'}: p.error(f'--modes must be train and/or infer, got {args.modes}')
    if args.clock == 'process' and cuda: p.error('--clock process measures CPU time: use it with --device cpu')
    return args


def main(argv=None):
    args = parse_args(argv)
    command = 'python ' + ' '.join(shlex.quote(a) for a in ([sys.argv[0]] + (sys.argv[1:] if argv is None else list(argv))))
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.bs, 3, args.size, args.size, generator=g).to(device)
    if args.channels_last: x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.n_out, (args.bs,), generator=g).to(device)

    runs = {}
    for name in args.models:
        for prec in args.precisions or [None]:
            key = f'{name}@{prec}' if prec else name
            try: runs[key] = Runner(name, args, device, x, y, *(PRECISIONS[prec] if prec else (None, None)))
            except ImportError as e:
                print(f'skipping {key}: {e}', flush=True); continue
            print(f'built {key}: {runs[key].params:,} params', flush=True)
    pairs = [(n, m) for n in runs for m in args.modes]
    samples = {n: {m: [] for m in args.modes} for n in runs}
    rng = random.Random(args.seed)
    t_start = time.perf_counter()
    for rnd in range(args.warmup + args.rounds):
        rng.shuffle(pairs)
        warm = rnd < args.warmup
        for name, mode in pairs:
            gc.collect()
            ips = runs[name].timed(mode, args.iters)
            if not warm: samples[name][mode].append(ips)
        tag = f'warmup {rnd + 1}/{args.warmup}' if warm else f'round {rnd - args.warmup + 1}/{args.rounds}'
        print(f'{tag} done ({time.perf_counter() - t_start:.0f}s)', flush=True)
    elapsed = time.perf_counter() - t_start

    info = machine_info(device)
    ref_prec = args.precisions[0] if args.precisions else None
    rows = summarise(runs, samples, args.modes, ref_prec)
    where = info.get('gpu', info['cpu']) if device.type == 'cuda' else info['cpu']
    header = [f'Command: `{command}`', '',
              f"Device: {device.type} ({where}); CPU: {info['cpu']}, {info['cpu_count']} cores "
              f"({info.get('cpu_affinity')} usable), torch threads {info['torch_threads']}; "
              f"load average at end {tuple(round(v, 2) for v in info.get('loadavg', ()))}",
              f"torch {info['torch']}, torchvision {info.get('torchvision')}, timm {info.get('timm')}, fastai {info.get('fastai')}"
              + (f", CUDA {info['cuda']}, cuDNN {info['cudnn']}" if device.type == 'cuda' else ''),
              f"bs {args.bs}, {args.size} px, " + (f"precisions {', '.join(args.precisions)} (_cl: channels_last), " if args.precisions else
              f"{'channels_last' if args.channels_last else 'contiguous (NCHW)'}, autocast {args.amp or 'off (fp32)'}, ") + f"SGD momentum 0.9, {args.clock} clock; {args.rounds} rounds x {args.iters} steps "
              f"per model and mode after {args.warmup} warm-up round(s), order shuffled per round; {elapsed:.0f}s timed",
              '', f"img/s{' per CPU-second of this process' if args.clock == 'process' else ''}: median over rounds "
              '(IQR as % of the median); "vs tv": ratio of medians to torchvision resnet50; '
              '"paired": median over rounds of the same-round ratio.'
              + (f' "vs {ref_prec}": the same model in {ref_prec}, same two ratios.' if ref_prec else '')]
    md = markdown(rows, args.modes, header, ref_prec)
    print('\n' + md)
    f1 = next((r for r in rows if r['model'] == 'resnetx50_f1'), None)
    if f1 and BASELINE in runs:
        verdicts = [f"{m} {f1[f'{m}_ratio']:.3f} (paired {f1[f'{m}_paired_ratio']:.3f})" for m in args.modes]
        ok = all(min(f1[f'{m}_ratio'], f1[f'{m}_paired_ratio']) >= 0.97 for m in args.modes)
        noise = max(r[f'{m}_iqr_pct'] for r in rows if r['model'] in (BASELINE, 'resnetx50_f1') for m in args.modes)
        print(f"goal fold=1 within 3% of torchvision resnet50: {'MET' if ok else 'NOT MET'}: " + ', '.join(verdicts)
              + (f"; but the IQR reaches {noise:.1f}% (> 3%): too noisy to decide at 3%" if noise > 3 else ''))
    if ref_prec:
        for r in rows:
            name, prec = split_key(r['model'])
            if prec == ref_prec or f'{args.modes[0]}_vs_ref' not in r: continue
            print(f'{prec} vs {ref_prec}, {label_of(name)}: ' + ', '.join(
                f"{m} {r[f'{m}_vs_ref']:.2f}x (paired {r[f'{m}_vs_ref_paired']:.2f}x, IQR {r[f'{m}_iqr_pct']:.0f}%)" for m in args.modes))
        goal = [r for r in rows if split_key(r['model'])[0] in ('resnetx50_f1', 'resnetx50_f2')
                and (split_key(r['model'])[1] or '').startswith('bf16') and 'train_vs_ref' in r]
        if goal and args.size == 64:
            ok = all(min(r['train_vs_ref'], r['train_vs_ref_paired']) >= 1.4 for r in goal)
            print(f"goal bf16 >= 1.4x fp32 train throughput at fold 1 and 2, 64 px: {'MET' if ok else 'NOT MET'}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
        out.with_suffix('.json').write_text(json.dumps(dict(
            command=command, args={k: v for k, v in vars(args).items()}, machine=info, elapsed_s=elapsed,
            rows=rows, samples=samples), indent=1))
        print(f'wrote {out} and {out.with_suffix(".json")}')
    return rows


if __name__ == '__main__': main()
