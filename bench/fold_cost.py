"""What folding and bf16's safety check cost, both tables in one run (a benchmark, not a test).

(a) Fold cost: training-step and inference time of timm `resnet50` and `resnetx50` at folds 1-4 as ratios to
    torchvision's `resnet50`, next to their FLOPs ratios (`fastai_resnetx.model_summary`). All models live in one
    process and are timed *interleaved* (each round times every model and mode once, order shuffled per round), so a
    slow spell on a shared machine hits all alike. The ratio is the median of the per-round (paired) ratios; its
    spread is their interquartile range (p25-p75); "excess" = time ratio - FLOPs ratio, in points.
(b) bf16 with the NaN/inf gradient check on (what `BF16MixedPrecision` runs on CPU before every optimizer step): the
    check's ms in the step (the package's `_non_finite`, and the per-parameter `isfinite().all()` check it replaced,
    timed in the same rounds), the whole step's ms, the check's share of it, and the bf16/fp32 step speed-up.
    fp32 = fastai's default (NCHW); bf16 = autocast with model and batch in channels_last, as `learn.to_bf16()` does.

    python bench/fold_cost.py --rounds 5                      # short: about 2 min on 2 idle cores
    python bench/fold_cost.py --rounds 21 --out bench/fold_cost.md     # the quiet rerun: about 7 min on 2 idle cores
    python bench/fold_cost.py --threads 1 --clock process --rounds 9 --models tv_resnet50,timm_resnet50,resnetx50_f1,\
resnetx50_f2,resnetx50_f3,resnetx50_f4,resnetx50_f3_convproj --out bench/fold_cost.md   # the busy-machine run
    python bench/fold_cost.py --profile --rounds 0            # only the by-op profile of fold 1 vs fold 3 (train step)

What-ifs (same weights, same function; for the profile's suspects): a model name ending `_convproj` runs the projection
shortcuts as torch's conv (as before 2026-12: `fastai_resnetx.model.layers.Conv1x1Gemm` runs them as a matmul now),
`_gemmproj` runs torchvision's/timm's `downsample` that way, `_gemmall` every 1x1 conv, e.g.
`--models tv_resnet50,resnetx50_f3,resnetx50_f3_convproj,tv_resnet50_gemmall --modes train`.

On a busy machine add `--threads 1 --clock process` (this process's CPU time: time spent descheduled is not counted).
On CUDA (`--device cuda`, or auto when one is available) table (a) runs channels_last + bf16 autocast +
`torch.compile` at 224 px, batch 64, 10 steps per timing; table (b) is CPU only (the check runs on CPU only: on CUDA
fastai's GradScaler path is used). Random data in memory, random init, no downloads.
"""
import argparse, json, os, random, statistics, sys, time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from throughput import BASELINE, Runner, build, machine_info  # noqa: E402  (one model builder for both scripts)

FOLD_MODELS = ['tv_resnet50', 'timm_resnet50', 'resnetx50_f1', 'resnetx50_f2', 'resnetx50_f3', 'resnetx50_f4']
LABELS = {'tv_resnet50': 'torchvision resnet50', 'timm_resnet50': 'timm resnet50'}


def label(name:str) -> str:
    "Table label of a benchmark model name."
    base, which = split_name(name)
    what = {'gemmproj': ', projections as GEMM', 'gemmall': ', every 1x1 as GEMM', 'convproj': ', projections as conv'}
    return (LABELS.get(base) or base.replace('_f', ' fold ')) + what.get(which, '')


def gemm_1x1(self, x):
    "A 1x1 conv (no padding, groups 1) as subsampling + one matmul, as the package's projections run it."
    from fastai_resnetx.model.layers import conv1x1_gemm
    return conv1x1_gemm(x, self.weight, self.bias, self.stride)


def with_gemm(m, which:str):
    """The what-ifs, in place: `which` 'gemmproj' runs the projection shortcuts' 1x1 convs as `gemm_1x1`, 'gemmall'
    every 1x1 conv, 'convproj' the projections as torch's conv again (what `projection` built before 2026-12)."""
    import types
    if which not in ('gemmproj', 'gemmall', 'convproj'):
        raise ValueError(f"what-if: 'gemmproj', 'gemmall' or 'convproj', got {which!r}")
    fwd = torch.nn.Conv2d.forward if which == 'convproj' else gemm_1x1
    for n, mod in m.named_modules():
        if (isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (1, 1) and mod.padding == (0, 0) and mod.groups == 1
                and (which == 'gemmall' or 'shortcut' in n or 'downsample' in n)):
            mod.forward = types.MethodType(fwd, mod)
    return m


def split_name(name:str) -> tuple:
    "'resnetx50_f3_convproj' -> ('resnetx50_f3', 'convproj'); no what-if -> (name, '')."
    for w in ('_gemmproj', '_gemmall', '_convproj'):
        if name.endswith(w): return name[:-len(w)], w[1:]
    return name, ''


def build_any(name:str, n_out:int=1000):
    "`throughput.build`, plus the what-ifs `<model>_<gemmproj|gemmall|convproj>` (`with_gemm`): same weights."
    base, which = split_name(name)
    return with_gemm(build(base, n_out), which) if which else build(base, n_out)


def quartiles(xs) -> tuple:
    "(p25, median, p75) of `xs`."
    if len(xs) < 2: return (xs[0],) * 3
    q = statistics.quantiles(xs, n=4, method='inclusive')
    return q[0], statistics.median(xs), q[2]


def flops_ratios(names, size:int) -> dict:
    "Forward FLOPs of each model at `size` px as a ratio to the baseline's (exact counts from `model_summary`)."
    from fastai_resnetx import model_summary
    flops = {n: model_summary(build(split_name(n)[0], 1000), input_size=(1, 3, size, size)).total_flops for n in names}
    return {n: f / flops[BASELINE] for n, f in flops.items()}


def old_non_finite(model) -> list:
    "The check before 2026-12 (reproduced for the before/after): per-parameter `isfinite().all()`, then a stack."
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named or bool(torch.stack([g.isfinite().all() for _, g in named]).all()): return []
    return [n for n, g in named if not bool(g.isfinite().all())]


def clock_of(args):
    "The timer: wall clock, or this process's CPU time."
    return time.process_time if args.clock == 'process' else time.perf_counter


# ---------------------------------------------------------------------------------------------------- table (a)
def fold_table(args, device, info) -> str:
    "Interleaved time ratios to torchvision resnet50 for `args.models`, with FLOPs ratios; returns Markdown."
    x = torch.randn(args.bs, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.bs,), device=device)
    cuda = device.type == 'cuda'
    rargs = SimpleNamespace(n_out=1000, lr=0.01, bs=args.bs, clock=args.clock)
    runs = {}
    for n in args.models:
        base, which = split_name(n)
        r = Runner(base, rargs, device, x, y, amp='bf16' if cuda else None, channels_last=cuda)
        if which: with_gemm(r.model, which)
        if cuda and not args.no_compile: r.model = torch.compile(r.model)
        runs[n] = r
    fr = flops_ratios(args.models, args.size)
    pairs = [(n, m) for n in runs for m in args.modes]
    secs = {p: [] for p in pairs}
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    for rnd in range(args.warmup + args.rounds):
        rng.shuffle(pairs)
        for n, m in pairs:
            ips = runs[n].timed(m, args.iters)
            if rnd >= args.warmup: secs[(n, m)].append(args.iters * args.bs / ips)
        if rnd >= args.warmup: print(f'  (a) round {rnd - args.warmup + 1}/{args.rounds} done', file=sys.stderr)
    elapsed = time.perf_counter() - t0
    head = ['model', 'FLOPs ratio']
    for m in args.modes:
        head += [f'{m} ms (IQR %)', f'{m} time ratio, paired (p25-p75)', f'{m} excess (pts)',
                 f'{m} ratio of medians', f'{m} ratio of minima']
    lines = [f"### (a) fold cost: {args.size} px, batch {args.bs}, {desc_setting(args, device)}",
             '', f"{args.rounds} interleaved rounds x {args.iters} step(s) after {args.warmup} warm-up, "
             f"{elapsed:.0f} s; {machine_line(info)}", '',
             '| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * (len(head) - 1)]
    summary = {}
    for n in runs:
        cells = [label(n), f'{fr[n]:.3f}']
        for m in args.modes:
            ts, base = secs[(n, m)], secs[(BASELINE, m)]
            lo, med, hi = quartiles([a / b for a, b in zip(ts, base)])
            t25, mt, t75 = quartiles(ts)
            iqr = 100 * (t75 - t25) / mt
            rom = mt / statistics.median(base)
            summary[(n, m)] = med
            cells += [f'{1000 * mt:.0f} ({iqr:.0f})', f'{med:.3f} ({lo:.3f}-{hi:.3f})', f'{100 * (med - fr[n]):+.1f}',
                      f'{rom:.3f}', f'{min(ts) / min(base):.3f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    over = [f"{label(n)} {m} {100 * (summary[(n, m)] - fr[n]):+.1f}" for n in runs if n.startswith('resnetx50_f')
            and n != 'resnetx50_f1' for m in args.modes if summary[(n, m)] - fr[n] > 0.05]
    lines += ['', 'Over their FLOPs by more than 5 points: ' + (', '.join(over) if over else 'none') + '.']
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------------- table (b)
class CheckedStep:
    "A resnetx model's SGD training step in fp32 (NCHW) or bf16 (channels_last), optionally with a gradient check."
    def __init__(self, name, x, y, bf16:bool):
        torch.manual_seed(0)
        self.bf16, self.y = bf16, y
        fmt = torch.channels_last if bf16 else torch.contiguous_format
        self.model = build_any(name, 1000).to(memory_format=fmt)
        self.x = x.contiguous(memory_format=fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(self, check, clock) -> tuple:
        "One step; returns (step seconds, check seconds). `check` None or a function of the model returning bad names."
        t0 = clock()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        tc = clock()
        if check is not None and check(self.model): raise RuntimeError('non-finite gradients in the benchmark')
        tc = clock() - tc
        self.opt.step()
        return clock() - t0, (tc if check is not None else 0.)


def check_table(args, info) -> str:
    "Interleaved fp32 / bf16 / bf16 + old check / bf16 + new check steps for `args.bf16_models`; returns Markdown."
    from fastai_resnetx.integration.precision import _non_finite
    x = torch.randn(args.bs, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.bs,))
    clock = clock_of(args)
    variants = {'fp32': (False, None), 'bf16, no check': (True, None), 'bf16 + check before (per parameter)':
                (True, old_non_finite), 'bf16 + check now (`_non_finite`)': (True, _non_finite)}
    steps = {n: {False: CheckedStep(n, x, y, False), True: CheckedStep(n, x, y, True)} for n in args.bf16_models}
    keys = [(n, v) for n in args.bf16_models for v in variants]
    res = {k: ([], []) for k in keys}
    rng = random.Random(args.seed + 1)
    t0 = time.perf_counter()
    for rnd in range(args.warmup + args.rounds):
        rng.shuffle(keys)
        for n, v in keys:
            bf16, check = variants[v]
            s, c = steps[n][bf16].step(check, clock)
            if rnd >= args.warmup:
                res[(n, v)][0].append(s)
                res[(n, v)][1].append(c)
        if rnd >= args.warmup: print(f'  (b) round {rnd - args.warmup + 1}/{args.rounds} done', file=sys.stderr)
    elapsed = time.perf_counter() - t0
    head = ['model', 'variant', 'step ms (IQR %)', 'check ms (p25-p75)', 'check share of step, paired % (p25-p75)',
            'bf16/fp32 step speed-up, paired (p25-p75)']
    lines = [f"### (b) bf16 with the NaN/inf gradient check: {args.size} px, batch {args.bs}, CPU, {args.clock} clock",
             '', f"{args.rounds} interleaved rounds after {args.warmup} warm-up, {elapsed:.0f} s; {machine_line(info)}",
             '', '| ' + ' | '.join(head) + ' |', '|---|---|' + '---:|' * (len(head) - 2)]
    for n in args.bf16_models:
        fp32 = res[(n, 'fp32')][0]
        for v, (bf16, check) in variants.items():
            st, ct = res[(n, v)]
            q = quartiles(st)
            cells = [label(n), v, f'{1000 * q[1]:.0f} ({100 * (q[2] - q[0]) / q[1]:.0f})']
            if check is None: cells += ['', '']
            else:
                cq, sh = quartiles(ct), quartiles([100 * c / s for c, s in zip(ct, st)])
                cells += [f'{1000 * cq[1]:.1f} ({1000 * cq[0]:.1f}-{1000 * cq[2]:.1f})',
                          f'{sh[1]:.1f} ({sh[0]:.1f}-{sh[2]:.1f})']
            sp = quartiles([a / b for a, b in zip(fp32, st)])
            cells.append(f'{sp[1]:.2f}x ({sp[0]:.2f}-{sp[2]:.2f})')
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------------- profile
def op_times(step:CheckedStep, steps:int=2) -> tuple:
    "Self CPU ms per training step of every aten op of `step`'s model over `steps` profiled steps, and op call counts."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps): step.step(None, time.perf_counter)
    ev = prof.key_averages()
    return ({e.key: e.self_cpu_time_total / 1000 / steps for e in ev}, {e.key: e.count // steps for e in ev})


def profile_table(args) -> str:
    """Fold 1 vs fold k fp32 training step by op (self CPU time): where a folded model's extra time goes. The two are
    profiled alternately `--profile-reps` times; each op's time is its median over the reps (against a busy machine)."""
    x = torch.randn(args.bs, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.bs,))
    a, b = args.profile_models
    steps = {n: CheckedStep(n, x, y, bf16=False) for n in (a, b)}
    for s in steps.values(): s.step(None, time.perf_counter)   # warm-up: oneDNN primitives, allocator
    reps = {a: [], b: []}
    for _ in range(args.profile_reps):
        for n in (a, b): reps[n].append(op_times(steps[n]))
    med = {n: {k: statistics.median(r[0].get(k, 0.) for r in reps[n]) for k in set().union(*(r[0] for r in reps[n]))}
           for n in (a, b)}
    ta, tb = med[a], med[b]
    ca, cb = reps[a][0][1], reps[b][0][1]
    ops = sorted(set(ta) | set(tb), key=lambda k: -abs(tb.get(k, 0) - ta.get(k, 0)))[:args.profile_top]
    tot_a, tot_b = sum(ta.values()), sum(tb.values())
    lines = [f"### by op: {label(a)} vs {label(b)}, fp32 training step, {args.size} px, batch {args.bs}, "
             f"torch threads {torch.get_num_threads()}", '',
             f"Self CPU ms per step (torch.profiler), median of {args.profile_reps} alternating profiles of 2 steps; "
             f"total {tot_a:.0f} ms vs {tot_b:.0f} ms ({tot_b / tot_a:.3f}x)", '',
             f'| op | {label(a)} ms (calls) | {label(b)} ms (calls) | extra ms | share of the extra |',
             '|---|---:|---:|---:|---:|']
    for k in ops:
        d = tb.get(k, 0) - ta.get(k, 0)
        lines.append(f'| {k} | {ta.get(k, 0):.1f} ({ca.get(k, 0)}) | {tb.get(k, 0):.1f} ({cb.get(k, 0)}) | {d:+.1f} '
                     f'| {100 * d / (tot_b - tot_a):.0f}% |')
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------------- main
def desc_setting(args, device) -> str:
    if device.type == 'cuda':
        return f"CUDA, channels_last, bf16 autocast{'' if args.no_compile else ', torch.compile'}, {args.clock} clock"
    return f'CPU fp32 (NCHW), {args.clock} clock'


def machine_line(info) -> str:
    gpu = f", {info['gpu']}" if 'gpu' in info else ''
    return (f"{info['cpu']}, {info['cpu_affinity']} usable cores, torch threads {info['torch_threads']}{gpu}, "
            f"torch {info['torch']}; load average {tuple(round(v, 2) for v in info.get('loadavg', ()))}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='auto: cuda when available')
    p.add_argument('--size', type=int, default=None, help='px (default 64 on CPU, 224 on CUDA)')
    p.add_argument('--bs', type=int, default=None, help='batch (default 16 on CPU, 64 on CUDA)')
    p.add_argument('--rounds', type=int, default=15, help='timed interleaved rounds (default 15; 0 skips the tables)')
    p.add_argument('--warmup', type=int, default=None, help='untimed rounds first (default 1 on CPU, 3 on CUDA)')
    p.add_argument('--iters', type=int, default=None, help='steps per timing (default 1 on CPU, 10 on CUDA)')
    p.add_argument('--modes', default='train,infer', help="table (a): 'train', 'infer' or both")
    p.add_argument('--models', default=','.join(FOLD_MODELS), help=f'table (a), baseline {BASELINE} always included')
    p.add_argument('--bf16-models', dest='bf16_models', default='resnetx50_f1', help="table (b) ('' skips it)")
    p.add_argument('--threads', type=int, default=None, help="torch CPU threads (default torch's own)")
    p.add_argument('--clock', default='wall', choices=['wall', 'process'], help='process: this process\'s CPU time')
    p.add_argument('--no-compile', dest='no_compile', action='store_true', help='CUDA: skip torch.compile')
    p.add_argument('--profile', action='store_true', help='also profile by op the two --profile-models (train step)')
    p.add_argument('--profile-models', dest='profile_models', default='resnetx50_f1,resnetx50_f3')
    p.add_argument('--profile-reps', dest='profile_reps', type=int, default=5, help='alternating profiles (median)')
    p.add_argument('--profile-top', dest='profile_top', type=int, default=15, help='ops listed (largest differences)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=None, help='also write the Markdown here')
    args = p.parse_args(argv)
    if args.device == 'auto': args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available(): p.error('--device cuda: no CUDA device is available')
    cuda = args.device == 'cuda'
    args.size = args.size or (224 if cuda else 64)
    args.bs = args.bs or (64 if cuda else 16)
    args.warmup = (3 if cuda else 1) if args.warmup is None else args.warmup
    args.iters = args.iters or (10 if cuda else 1)
    args.models = [BASELINE] + [m for m in args.models.split(',') if m and m != BASELINE]
    args.modes = [m for m in args.modes.split(',') if m]
    if not args.modes or set(args.modes) - {'train', 'infer'}:
        p.error(f"--modes: 'train', 'infer' or both, got {args.modes}")
    args.bf16_models = [m for m in args.bf16_models.split(',') if m]
    args.profile_models = args.profile_models.split(',')
    if len(args.profile_models) != 2: p.error(f'--profile-models: two models, got {args.profile_models}')
    for name, v, lo in (('--rounds', args.rounds, 0), ('--bs', args.bs, 1), ('--size', args.size, 32)):
        if v < lo: p.error(f'{name} must be >= {lo}, got {v}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if device.type == 'cuda': torch.backends.cudnn.benchmark = True
    parts = [f"Command: `python bench/fold_cost.py {' '.join(sys.argv[1:] if argv is None else argv)}`"]
    if args.rounds:
        parts.append(fold_table(args, device, machine_info(device)))
        print(parts[-1], flush=True)
        if args.bf16_models and device.type == 'cpu':
            parts.append(check_table(args, machine_info(device)))
            print(parts[-1], flush=True)
        elif args.bf16_models: print('(b) skipped: the gradient check runs on CPU only (`--device cpu` for it)')
    if args.profile:
        parts.append(profile_table(args))
        print(parts[-1], flush=True)
    if args.out:
        Path(args.out).write_text('\n'.join(parts))
        print(f'wrote {args.out}')


if __name__ == '__main__': main()
