"The work behind the `resnetx` command (`resnetx_cli` parses and checks the arguments, then calls `run`)."
from .train import resolve_arch, check_input_size, atomic_write, train, one_line_memory_error
from .plots import plot_topology
from resnetx_cli.runs import process_seconds

__all__ = ['run']


def _summary(args):
    from ..inspection.arch_summary import arch_summary, build_model
    from ..inspection.flops import model_summary
    model = build_model(resolve_arch(args.arch, args.fold))   # random weights: never downloads
    check_input_size(model, args.size, args.arch)
    print(arch_summary(model, args.idx, verbose=args.verbose))
    print()
    print(model_summary(model, input_size=(1, 3, args.size, args.size), max_depth=2))


def _plot(args):
    fig = plot_topology(args.arch, fold=args.fold, start_id=args.start_id, end_id=args.end_id)
    fmt = args.out.suffix.lower()[1:]
    atomic_write(args.out, lambda p: fig.savefig(p, format=fmt, dpi=fig.dpi))
    print(f'wrote {args.out} ({fmt.upper()}): {len(fig.skips)} skips, '
          f'{sum(k == "projection" for *_, k in fig.skips)} projections')


def _train(args):
    m = train(args.data, out=args.out, arch=args.arch, fold=args.fold, epochs=args.epochs, size=args.size, bs=args.bs,
              lr=args.lr, pretrained=args.pretrained, precision=args.precision, seed=args.seed,
              labels=getattr(args, 'labels', None))
    if m['rank'] == 0:
        which = 'test' if m.get('validation') == 'test set' else 'validation'
        print(f"final {which} accuracy: {m['valid_accuracy']:.4f} ({m['n_valid']} images); "
              f"wall clock {process_seconds():.1f} s (whole process); outputs in {args.out}/")


def _study(args):
    from .study import StudySettings, run_study
    if args.report is not None:
        _, text = run_study(args.report, report_only=True)
    else:
        s = StudySettings(data=str(args.data), arch=args.arch, folds=args.folds, seeds=args.seeds, epochs=args.epochs,
                          bs=args.bs, lr=args.lr, pad=args.pad, flip=args.flip, erase=args.erase,
                          stage_local=args.stage_local, equal_cost=args.equal_cost,
                          warm=None if args.warm is None else str(args.warm))
        _, text = run_study(args.out, s)
    print(text or 'no finished runs: no report written')
    print(f"report: {args.report or args.out}/report.md and study.png; wall clock {process_seconds():.1f} s")


def run(args):
    "Run the parsed and checked command line `args`; out-of-memory becomes a one-line `ValueError`."
    import matplotlib
    matplotlib.use('Agg')
    with one_line_memory_error(getattr(args, 'size', None), getattr(args, 'bs', None)):
        {'train': _train, 'study': _study, 'summary': _summary, 'plot': _plot}[args.command](args)
