"The `resnetx` command: `resnetx train`, `resnetx summary ARCH`, `resnetx plot ARCH`."
import argparse, sys, time

__all__ = ['main', 'parser']

_T0 = time.time()


class _Parser(argparse.ArgumentParser):
    "An argument parser whose errors are one line on stderr (and exit code 2)."
    def error(self, message):
        print(f'{self.prog}: error: {message}', file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    "The argument parser of the `resnetx` command."
    from .train import TRAIN_DEFAULTS as D
    p = _Parser(prog='resnetx', description='ResNetX (a folded ResNet) for fastai')
    sub = p.add_subparsers(dest='command', required=True, parser_class=_Parser)
    t = sub.add_parser('train', help='train on the built-in digits or a folder of images')
    t.add_argument('--data', help='image folder (train/ and valid/ of class folders, or class folders); default: digits')
    t.add_argument('--arch', default=D['arch'], help=f"arch name (default {D['arch']})")
    t.add_argument('--fold', type=int, default=None, help=f"fold depth of a ResNetX arch (default {D['fold']})")
    t.add_argument('--epochs', type=int, default=D['epochs'])
    t.add_argument('--size', type=int, default=D['size'], help='image size in pixels')
    t.add_argument('--bs', type=int, default=D['bs'], help='batch size')
    t.add_argument('--lr', type=float, default=D['lr'], help='peak learning rate')
    t.add_argument('--pretrained', action='store_true', help='start from ImageNet weights (fine-tune)')
    t.add_argument('--out', default='runs/latest', help='folder for export.pkl, loss.png, confusion_matrix.png, metrics.json')
    t.add_argument('--seed', type=int, default=D['seed'])
    s = sub.add_parser('summary', help='arch summary and FLOPs of any arch (never downloads weights)')
    s.add_argument('arch')
    s.add_argument('--size', type=int, default=224)
    s.add_argument('--fold', type=int, default=None)
    s.add_argument('--idx', type=int, nargs='*', default=None, help='drill into this child (index path)')
    s.add_argument('--verbose', action='store_true')
    g = sub.add_parser('plot', help='picture of a ResNetX topology (units and skips) as PNG')
    g.add_argument('arch')
    g.add_argument('--fold', type=int, default=1)
    g.add_argument('--start-id', type=int, default=None)
    g.add_argument('--end-id', type=int, default=None)
    g.add_argument('--out', default='topology.png')
    return p


def _summary(args):
    from .train import resolve_arch
    from ..inspection.arch_summary import arch_summary, build_model
    from ..inspection.flops import model_summary
    if args.size < 8: raise ValueError(f"`--size` must be >= 8, got {args.size}")
    model = build_model(resolve_arch(args.arch, args.fold))   # random weights: never downloads
    print(arch_summary(model, args.idx, verbose=args.verbose))
    print()
    print(model_summary(model, input_size=(1, 3, args.size, args.size), max_depth=2))


def _plot(args):
    import matplotlib; matplotlib.use('Agg')
    from .plots import plot_topology
    fig = plot_topology(args.arch, fold=args.fold, start_id=args.start_id, end_id=args.end_id)
    from .train import _atomic
    from pathlib import Path
    _atomic(Path(args.out), lambda p: fig.savefig(p, format='png', dpi=fig.dpi))
    print(f'wrote {args.out}: {len(fig.skips)} skips, {sum(k == "projection" for *_, k in fig.skips)} projections')


def _train(args):
    from .train import train
    m = train(args.data, arch=args.arch, fold=args.fold, epochs=args.epochs, size=args.size, bs=args.bs, lr=args.lr,
              pretrained=args.pretrained, out=args.out, seed=args.seed)
    from fastai.vision.all import rank_distrib
    if rank_distrib() == 0:
        print(f"final validation accuracy: {m['valid_accuracy']:.4f} ({m['n_valid']} images); "
              f"wall clock {time.time() - _T0:.1f} s; outputs in {args.out}/")


def main(argv=None):
    "Entry point of the `resnetx` command; bad input is one line on stderr and exit code 2."
    args = parser().parse_args(argv)
    try:
        {'train': _train, 'summary': _summary, 'plot': _plot}[args.command](args)
    except KeyboardInterrupt:
        print('resnetx: interrupted; no partial output was written', file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, IndexError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f'resnetx: error: {msg}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__': sys.exit(main())
