"""Speed of folded family models at fold 1 against their sources (not a test).

For each variant the source (timm's or torchvision's model, random init) and `fold_resnet` of an identical copy of it
live in one process and are timed *interleaved*: every round times every (variant, model, mode) once, in a freshly
shuffled order, so a slow spell on a shared machine hits both alike. Reported per variant and mode: median time per step
of each, the ratio folded/source of the medians, the median of the same-round (paired) ratios, and the spread (IQR as a
% of the median). Target: ratio <= 1.03. Random data in memory, no downloads.

    python bench/family_speed.py                                   # CPU: bs 8 at 64 px, 1 thread, ~2 min on 2 cores
    python bench/family_speed.py --rounds 15 --out bench/family_speed.md   # the quiet-machine rerun
    python bench/family_speed.py --device cuda --bs 64 --size 224 --threads 0

Training step = zero_grad, forward, cross-entropy, backward, SGD (momentum 0.9) step. Inference = forward in eval
mode under `torch.inference_mode()`. The table is followed by a noise-free check: the aten ops (forward and backward)
of each folded model and its source, recorded with a dispatch mode, compared in order.
"""
import argparse, copy, platform, random, shlex, statistics, sys, time
from pathlib import Path

import timm, torch, torchvision
from torch import nn
import torch.nn.functional as F

from fastai_resnetx.model.family import fold_resnet

VARIANTS = {'resnet50': lambda: timm.create_model('resnet50'),
            'seresnext26d_32x4d': lambda: timm.create_model('seresnext26d_32x4d'),
            'tv:resnext50_32x4d': lambda: torchvision.models.resnext50_32x4d()}


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def _clock(kind):
    return time.process_time if kind == 'process' else time.perf_counter


def time_step(model, mode, x, y, opt, reps, clock, device):
    "Seconds per step (mean over `reps`) of a training step or an inference forward."
    if mode == 'train':
        model.train()
        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        model.eval()
        def step():
            with torch.inference_mode(): model(x)
    step(); _sync(device)   # warm-up (allocator, lazy init)
    t = clock()
    for _ in range(reps): step()
    _sync(device)
    return (clock() - t) / reps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--variants', default=','.join(VARIANTS))
    p.add_argument('--device', default='cpu')
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--threads', type=int, default=1, help='torch threads (0: leave the default)')
    p.add_argument('--clock', choices=('wall', 'process'), default='wall')
    p.add_argument('--out', default=None, help='write the table (markdown) here too')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    device, clock = torch.device(a.device), _clock(a.clock)
    torch.manual_seed(0)
    x = torch.randn(a.bs, 3, a.size, a.size, device=device)
    y = torch.randint(0, 1000, (a.bs,), device=device)
    models = {}
    for v in a.variants.split(','):
        src = VARIANTS[v]().to(device)
        for name, m in (('source', src), ('folded', fold_resnet(copy.deepcopy(src)))):
            models[(v, name)] = (m, torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9))
    times = {(v, n, mode): [] for (v, n) in models for mode in ('train', 'infer')}
    for r in range(a.rounds):
        keys = list(times)
        random.Random(r).shuffle(keys)
        for v, n, mode in keys:
            m, opt = models[(v, n)]
            times[(v, n, mode)].append(time_step(m, mode, x, y, opt, a.reps, clock, device))
        print(f'round {r + 1}/{a.rounds} done', file=sys.stderr, flush=True)
    lines = table(times, a)
    for v in dict.fromkeys(k[0] for k in models):   # same ops in the same order: any difference is Python overhead
        same = {mode: aten_ops(models[(v, 'source')][0], x, mode == 'train') ==
                aten_ops(models[(v, 'folded')][0], x, mode == 'train') for mode in ('train', 'infer')}
        n = len(aten_ops(models[(v, 'source')][0], x, True))
        yes = {mode: 'yes' if ok else 'NO' for mode, ok in same.items()}
        lines.append(f'- {v}: the folded model runs the same aten ops in the same order as its source: '
                     f'training step {yes["train"]} ({n} ops), inference {yes["infer"]}')
    print('\n'.join(lines))
    if a.out: Path(a.out).write_text('\n'.join(lines) + '\n')


def aten_ops(model, x, train:bool) -> list:
    "The aten ops one forward (and backward, if `train`) runs, in order: what the time is spent on, without the noise."
    from torch.utils._python_dispatch import TorchDispatchMode
    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(str(func))
            return func(*args, **(kwargs or {}))
    ops = []
    model.train(train)
    with Record():
        if train: F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long, device=x.device)).backward()
        else:
            with torch.inference_mode(): model(x)
    return ops


def _iqr_pct(v):
    q = statistics.quantiles(v, n=4)
    return 100 * (q[2] - q[0]) / statistics.median(v)


def table(times, a) -> list:
    "The results as markdown lines: per variant and mode, medians, ratios, spread."
    info = Path('/proc/cpuinfo').read_text().splitlines() if Path('/proc/cpuinfo').exists() else []
    cpu = next((l.split(':', 1)[1].strip() for l in info if l.startswith('model name')), platform.processor())
    dev = torch.cuda.get_device_name() if a.device.startswith('cuda') else f'{cpu}, {torch.get_num_threads()} thread(s)'
    lines = [f'Command: `python bench/family_speed.py {shlex.join(sys.argv[1:])}`', '',
             f'Device: {dev}; bs {a.bs}, {a.size} px, fp32, {a.rounds} rounds x {a.reps} steps, {a.clock} clock; '
             f'torch {torch.__version__}, timm {timm.__version__}, torchvision {torchvision.__version__}', '',
             '| variant | mode | source ms/step | folded ms/step | ratio of medians | paired ratio (median) | '
             'IQR source / folded % |', '|---|---|---|---|---|---|---|']
    for v in dict.fromkeys(k[0] for k in times):
        for mode in ('train', 'infer'):
            s, f = times[(v, 'source', mode)], times[(v, 'folded', mode)]
            paired = statistics.median(b / a_ for a_, b in zip(s, f))
            lines.append(f'| {v} | {mode} | {1e3 * statistics.median(s):.1f} | {1e3 * statistics.median(f):.1f} | '
                         f'{statistics.median(f) / statistics.median(s):.3f} | {paired:.3f} | '
                         f'{_iqr_pct(s):.0f} / {_iqr_pct(f):.0f} |')
    return lines


if __name__ == '__main__': main()
