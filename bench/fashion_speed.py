"""Training speed on Fashion-MNIST: the package's `resnetx train` job against plain fastai and a bare PyTorch loop.

The same model (`resnetx_small` at fold 1 with fastai's head, as `vision_learner` builds it), the same in-memory data
and batches, the same one-cycle schedule and fused AdamW; one epoch each by default, in turn, `--rounds` times, in one
process on a quiet machine. Reported: seconds of the training epoch(s) and the ratio to plain fastai (the issue's bar:
package / fastai <= 1.05), and to the bare loop (the limit: no callbacks, no validation).

    python bench/fashion_speed.py --rounds 3 --epochs 1
"""
import argparse, json, statistics, sys, time
from pathlib import Path

import torch
from fastai.vision.all import vision_learner, accuracy, set_seed, Learner
from fastai.callback.schedule import combined_cos

from fastai_resnetx.job.idx_data import load_fashion_mnist
from fastai_resnetx.job.tensor_data import idx_dls, Augment
from fastai_resnetx.job.train import fused_adamw, train, IDX_DEFAULTS
from fastai_resnetx.job.study import cpu_kind
from fastai_resnetx.integration.fastai_meta import resnetx_arch


def package(data, epochs):
    "The job as `resnetx train --data fashion-mnist` runs it (no outputs written): its fit seconds."
    m = train('fashion-mnist', epochs=epochs, show=False, save=False)
    return m['fit_seconds'], m['valid_accuracy']


def _learner(data, bs):
    "The job's model and recipe written with fastai's own calls: fastai's head without dropout, channels_last."
    dls = idx_dls(data, bs=bs, augment=Augment(flip=True), seed=42)
    set_seed(42)
    learn = vision_learner(dls, resnetx_arch(IDX_DEFAULTS['arch'], fold=1), pretrained=False, n_in=1, metrics=accuracy,
                           opt_func=fused_adamw, ps=0.)
    return learn.to_channelslast(use_amp=False)


def plain_fastai(data, epochs):
    "fastai by hand: the same learner, `fit_one_cycle`, no progress bar: its fit seconds."
    learn = _learner(data, IDX_DEFAULTS['bs'])
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, IDX_DEFAULTS['lr'])
    return time.time() - t0, float(learn.validate()[1])


def bare_loop(data, epochs):
    "The same model, batches and schedule in a plain PyTorch loop, validation once at the end: its seconds."
    learn = _learner(data, IDX_DEFAULTS['bs'])
    model, dl = learn.model.to(memory_format=torch.channels_last), learn.dls.train
    opt = torch.optim.AdamW(model.parameters(), lr=IDX_DEFAULTS['lr'], weight_decay=0.01, fused=True)
    steps, i = epochs * len(dl), 0
    lr = IDX_DEFAULTS['lr']
    lr_at = combined_cos(0.25, lr / 25, lr, lr / 1e5)   # fit_one_cycle's learning rates (div 25, div_final 1e5)
    t0 = time.time()
    model.train()
    for _ in range(epochs):
        for xb, yb in dl:
            for g in opt.param_groups: g['lr'] = float(lr_at(i / steps))
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            i += 1
    seconds = time.time() - t0
    model.eval()
    with torch.no_grad():
        acc = statistics.fmean(float((model(x).argmax(1) == y).float().mean()) for x, y in learn.dls.valid)
    return seconds, acc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--out', type=Path, default=None, help='write the figures as JSON here')
    args = p.parse_args(argv)
    data = load_fashion_mnist()
    times = {'package (resnetx train)': [], 'plain fastai': [], 'bare PyTorch loop': []}
    for r in range(args.rounds):
        for name, fn in zip(times, (package, plain_fastai, bare_loop)):
            s, acc = fn(data, args.epochs)
            times[name].append(s)
            print(f"round {r + 1} {name}: {s:.1f} s, test accuracy {acc:.4f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med['plain fastai']
    print(f"\n{cpu_kind()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} epoch(s), "
          f"medians of {args.rounds} rounds")
    for k, v in med.items(): print(f"{k:26s} {v:7.1f} s   x{v / base:.3f} of plain fastai")
    if args.out: args.out.write_text(json.dumps(dict(cpu=cpu_kind(), torch=torch.__version__, times=times), indent=2))


if __name__ == '__main__': main()
