"""The `resnetx` command's front door: parse and check every argument, then hand over to `fastai_resnetx.job`.

It lives outside the package on purpose: importing anything in `fastai_resnetx` imports fastai and torch (seconds),
and `resnetx --help` or a bad argument should answer at once. Only the standard library is imported here;
`resnetx_cli.runs` holds the rules about run folders that the front door and the job (`fastai_resnetx.job`) share.
"""
import argparse, math, os, signal, sys
from pathlib import Path

from .runs import check_out_folder, check_writable   # also starts the process clock's fallback (runs._T0) at once

__all__ = ['main', 'parser', 'Terminated', 'HungUp', 'SIZE_RANGE', 'FOLD_RANGE']

SIZE_RANGE, FOLD_RANGE, BS_RANGE, EPOCHS_RANGE, SEED_RANGE = (8, 2048), (1, 64), (2, 4096), (1, 1000), (0, 2**32 - 1)
PLOT_FORMATS = ('.png', '.pdf', '.svg')
# defaults of `resnetx train`, the same as `fastai_resnetx.job.train.TRAIN_DEFAULTS` and `IDX_DEFAULTS` (a test keeps
# them equal): for the digits and image folders, and for idx data sets (`--data fashion-mnist`; size None: the data's)
DEFAULTS = dict(arch='resnetx18', fold=2, epochs=10, size=24, bs=64, lr=4e-3, seed=42)
IDX_DEFAULTS = dict(arch='resnetx_small', fold=1, epochs=5, size=None, bs=256, lr=1e-2, seed=42)
# defaults of `resnetx study`, the same as `fastai_resnetx.job.study.STUDY_DEFAULTS`
STUDY_DEFAULTS = dict(data='fashion-mnist', arch='resnetx_small', folds=(1, 2, 3), seeds=5, epochs=5, bs=256, lr=1e-2,
                      pad=0, flip=True, erase=0.)
FASHION_MNIST = 'fashion-mnist'


class Terminated(KeyboardInterrupt):
    "SIGTERM (sent by `timeout`, SLURM, torchrun), handled as Ctrl-C is."


class HungUp(Terminated):
    "SIGHUP (the terminal or ssh session closed), handled as SIGTERM is."


_SIGNALLED = []   # signals received since `main` began: one that an import swallowed still stops the run


def _stop_error(signum) -> KeyboardInterrupt:
    "The exception a signal stops the run with: Ctrl-C as Python raises it, SIGTERM and SIGHUP as their own kinds."
    if signum == signal.SIGINT: return KeyboardInterrupt()
    return HungUp() if signum == getattr(signal, 'SIGHUP', None) else Terminated()


def _on_signal(signum, frame):
    _SIGNALLED.append(signum)
    raise _stop_error(signum)


def _version() -> str:
    from importlib.metadata import version, PackageNotFoundError
    try: return version('fastai_resnetx')
    except PackageNotFoundError: return 'unknown (not installed)'


class _PipeSafe:
    "A text stream whose reader may go away (`| head -1`) or that is closed (`>&-`): writes then go to /dev/null."
    def __init__(self, stream): self.stream = stream
    def _to_devnull(self):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())   # the interpreter's last flush too
        except (OSError, ValueError, AttributeError): self.stream = open(os.devnull, 'w')
    def write(self, s):
        try: return self.stream.write(s)
        except BrokenPipeError: self._to_devnull()
        return len(s)
    def flush(self):
        try: self.stream.flush()
        except BrokenPipeError: self._to_devnull()
    def isatty(self):
        try: return self.stream.isatty()
        except (OSError, ValueError): return False
    def __getattr__(self, name): return getattr(self.stream, name)


def _safe_streams():
    "stdout/stderr that never fail a run: closed ones become /dev/null, a broken pipe dropped, odd characters escaped."
    for fd in (0, 1, 2):      # a closed fd 1 would be the next file opened (the lock, an image): C code writes there
        try: os.fstat(fd)
        except OSError: os.open(os.devnull, os.O_RDWR)   # the lowest free fd is this one: those below it are open
    for name in ('stdout', 'stderr'):
        stream = getattr(sys, name)
        if stream is None or getattr(stream, 'closed', False): stream = open(os.devnull, 'w')
        elif hasattr(stream, 'reconfigure'):
            try: stream.reconfigure(errors='backslashreplace')   # a class name that LC_ALL=C cannot print
            except (ValueError, OSError): pass
        if not isinstance(stream, _PipeSafe): setattr(sys, name, _PipeSafe(stream))


def integer(lo:int, hi:int, why:str=''):
    "An argparse type: an integer in `[lo, hi]`; the error says the range (and `why`)."
    def parse(s):
        try: v = int(s)
        except ValueError: v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}]{why}, got {s!r}")
        return v
    return parse


def number(lo:float, hi:float):
    "An argparse type: a number in the open interval `(lo, hi)`."
    def parse(s):
        try: v = float(s)
        except ValueError: v = math.nan
        if not lo < v < hi: raise argparse.ArgumentTypeError(f"must be a number in ({lo:g}, {hi:g}), got {s!r}")
        return v
    return parse


class _Parser(argparse.ArgumentParser):
    "An argument parser whose errors are one line on stderr and exit code 2."
    def error(self, message):
        print(f'{self.prog}: error: {message}', file=sys.stderr)
        sys.exit(2)


def _size_arg(p, default):
    p.add_argument('--size', type=integer(*SIZE_RANGE), default=default,
                   help=f'image size in px, in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}] (default {default})')


def _fold_arg(p, default, what):
    p.add_argument('--fold', type=integer(*FOLD_RANGE), default=default,
                   help=f'fold depth of a ResNetX arch, >= 1; the arch sets the largest ({what})')


def _two(key:str) -> str:
    "A default of `resnetx train` as --help says it: the digits' and folders', and the idx data sets'."
    return f"default {DEFAULTS[key]}; with an idx data set {IDX_DEFAULTS[key]}"


def _train_parser(sub):
    D = DEFAULTS
    t = sub.add_parser('train', help='train on the built-in digits or a folder of images',
                       description='Train an arch; write export.pkl, loss.png, confusion_matrix.png and metrics.json '
                                   'to --out, all together or not at all.')
    t.add_argument('--data', type=Path, help="'fashion-mnist' (built in: 60,000 training images, tested on the "
                   "10,000 test images), a folder of idx files (MNIST's format), or an image folder: train/ and valid/ "
                   "(or val/, validation/) of class folders, or class folders (a random 20%% of each class is held "
                   "out, seed 42); default: the built-in digits")
    t.add_argument('--labels', type=Path, default=None,
                   help='a CSV of labels (as fastai\'s ImageDataLoaders.from_csv reads it): first column the image '
                        'file (relative to --data), second the label; an optional is_valid column chooses the '
                        'validation images')
    t.add_argument('--arch', default=None, help=f"ResNetX, torchvision or timm arch name ({_two('arch')})")
    _fold_arg(t, None, _two('fold'))
    t.add_argument('--epochs', type=integer(*EPOCHS_RANGE), default=None, help=f"in [1, 1000] ({_two('epochs')})")
    t.add_argument('--size', type=integer(*SIZE_RANGE), default=None,
                   help=f"image size in px, in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}] (default {D['size']}; an idx data "
                        "set is used at its own size)")
    t.add_argument('--bs', type=integer(*BS_RANGE, why=' (BatchNorm needs 2 images per batch)'), default=None,
                   help=f"batch size in [{BS_RANGE[0]}, {BS_RANGE[1]}] ({_two('bs')}; more than the training "
                        "images: reduced, with a note)")
    t.add_argument('--lr', type=number(0, 10), default=None, help=f"peak learning rate in (0, 10) ({_two('lr')})")
    t.add_argument('--pretrained', action='store_true',
                   help='start from ImageNet weights: 1 epoch on the head, then the rest unfrozen')
    t.add_argument('--precision', choices=('fp32', 'bf16'), default=None,
                   help="training precision (default: the faster of the two for this arch, size and machine)")
    t.add_argument('--out', type=Path, default=Path('runs/latest'), help='output folder: new, empty, or one an earlier '
                   'run marked as its run folder (only the files that run wrote are replaced, when this run has '
                   'written everything; anything else there is kept) (default runs/latest)')
    t.add_argument('--seed', type=integer(*SEED_RANGE), default=D['seed'],
                   help=f"random seed of initialisation, data order and augmentation (default {D['seed']})")


def parser() -> argparse.ArgumentParser:
    "The argument parser of the `resnetx` command."
    p = _Parser(prog='resnetx', description='ResNetX (a folded ResNet) for fastai')
    p.add_argument('--version', action='version', version=f'resnetx (fastai_resnetx) {_version()}')
    sub = p.add_subparsers(dest='command', required=True, parser_class=_Parser)
    _train_parser(sub)
    _study_parser(sub)
    s = sub.add_parser('summary', help='arch summary and FLOPs of any arch (never downloads weights)')
    s.add_argument('arch', help='ResNetX, torchvision or timm arch name')
    _size_arg(s, 224)
    _fold_arg(s, None, 'ResNetX archs only')
    s.add_argument('--idx', type=integer(0, 10_000), nargs='*', default=None,
                   help='drill into this child (index path, each >= 0)')
    s.add_argument('--verbose', action='store_true')
    g = sub.add_parser('plot', help='picture of a ResNetX topology (units and skips)')
    g.add_argument('arch', help='ResNetX arch name')
    _fold_arg(g, 1, 'default 1')
    g.add_argument('--start-id', type=integer(0, 10_000), default=None, help='first unit of the folded span (>= 0)')
    g.add_argument('--end-id', type=integer(1, 10_000), default=None, help='last unit of the folded span (>= 1)')
    g.add_argument('--out', type=Path, default=Path('topology.png'),
                   help=f"picture file, {', '.join(PLOT_FORMATS)} (default topology.png)")
    return p


def _study_parser(sub):
    D = STUDY_DEFAULTS
    st = sub.add_parser('study', help='does folding help? the paired study of folds over seeds, with its report',
                        description='Train every arm (fold 1, each fold, stage-local folds, fold 1 at equal cost) on '
                                    'the same seeds; each finished run is added to --out/results.jsonl (a stopped '
                                    'study resumes), then report.md and study.png are written.')
    st.add_argument('--data', type=Path, default=Path(D['data']),
                    help="'fashion-mnist' (built in) or a folder of idx files (default fashion-mnist)")
    st.add_argument('--arch', default=D['arch'], help=f"ResNetX arch (default {D['arch']})")
    st.add_argument('--folds', type=int_list(*FOLD_RANGE), default=D['folds'],
                    help='comma-separated folds, e.g. 1,2,3 (fold 1, the baseline, is always run)')
    st.add_argument('--seeds', type=integer(1, 1000), default=D['seeds'], help=f"seeds 0..N-1 (default {D['seeds']})")
    st.add_argument('--epochs', type=integer(*EPOCHS_RANGE), default=D['epochs'], help=f"(default {D['epochs']})")
    st.add_argument('--bs', type=integer(*BS_RANGE), default=D['bs'], help=f"batch size (default {D['bs']})")
    st.add_argument('--lr', type=number(0, 10), default=D['lr'], help=f"peak learning rate (default {D['lr']:g})")
    st.add_argument('--pad', type=integer(0, 64), default=D['pad'],
                    help='random crop after padding by this many px (default 0: no crop)')
    st.add_argument('--flip', action=argparse.BooleanOptionalAction, default=D['flip'],
                    help='random horizontal flip (default on; --no-flip for digits)')
    st.add_argument('--erase', type=number(-1e-9, 1 + 1e-9), default=D['erase'],
                    help='probability of random erasing per image, in [0, 1] (default 0)')
    st.add_argument('--stage-local', action='store_true',
                    help='add each fold > 1 stage-local (no skip crosses a stage boundary) as an arm')
    st.add_argument('--equal-cost', action='store_true',
                    help="add fold 1 widened to the largest fold's FLOPs as an arm")
    st.add_argument('--warm', type=Path, default=None, metavar='FILE',
                    help="start every arm from this checkpoint of --arch at fold 1 (torch.save(model.state_dict()), or "
                         "a ResNet's for a ResNet layout; a fold's extra projections keep their init), then fine-tune: "
                         "1 epoch on the head, the rest unfrozen")
    st.add_argument('--out', type=Path, default=None, help='the study folder: new, empty, or an earlier study of the '
                    'same settings (it resumes)')
    st.add_argument('--report', type=Path, default=None, metavar='DIR',
                    help='only write the report of the finished runs in study folder DIR')


def int_list(lo:int, hi:int):
    "An argparse type: comma-separated integers, each in `[lo, hi]`."
    def parse(s):
        try: vs = tuple(int(v) for v in s.split(','))
        except ValueError: vs = None
        if not vs or not all(lo <= v <= hi for v in vs):
            raise argparse.ArgumentTypeError(f"must be comma-separated integers in [{lo}, {hi}], got {s!r}")
        return vs
    return parse


def check_paths(args):
    "The file-system arguments, before anything heavy is imported."
    if args.command == 'study':
        if (args.out is None) == (args.report is None):
            raise ValueError("give `--out DIR` (run or resume a study) or `--report DIR` (report its finished runs)")
        if str(args.data) != FASHION_MNIST and not args.data.is_dir():
            raise ValueError(f"`--data` must be 'fashion-mnist' or a folder of idx files, got {str(args.data)!r}")
        check_out_folder(args.out or args.report, None, 'resnetx study')
        if args.report is not None and not args.report.is_dir():
            raise ValueError(f"`--report` {str(args.report)!r} is not a study folder")
    if args.command == 'train':
        if args.data is not None and str(args.data) == FASHION_MNIST and not args.data.is_dir():
            if args.labels is not None: raise ValueError("`--labels` is for image folders, not for 'fashion-mnist'")
            check_out_folder(args.out, None)
            return
        if args.data is not None and not args.data.is_dir():
            raise ValueError(f"`--data` folder {str(args.data)!r} does not exist" if not args.data.exists()
                             else f"`--data` {str(args.data)!r} is a file, not a folder")
        if args.labels is not None:
            if args.data is None: raise ValueError("`--labels` needs `--data`: the folder the CSV's file names are in")
            if not args.labels.is_file() and (args.data / args.labels).is_file():
                # fastai's from_csv: the CSV's name relative to the folder
                args.labels = args.data / args.labels
            if not args.labels.is_file():
                raise ValueError(f"`--labels` file {str(args.labels)!r} does not exist" if not args.labels.exists()
                                 else f"`--labels` {str(args.labels)!r} is not a file")
        check_out_folder(args.out, args.data)
    if args.command == 'plot':
        if args.out.suffix.lower() not in PLOT_FORMATS:
            raise ValueError(f"`--out` must end in {', '.join(PLOT_FORMATS)}, got {str(args.out)!r}")
        if not args.out.absolute().parent.is_dir():
            raise ValueError(f"`--out` {str(args.out)!r}: folder {str(args.out.parent)!r} does not exist")
        check_writable(args.out.absolute().parent, '--out')


def _stopped(e:KeyboardInterrupt) -> int:
    how = ('hung up (SIGHUP)' if isinstance(e, HungUp) else 'terminated (SIGTERM)' if isinstance(e, Terminated)
           else 'interrupted')
    print(f"resnetx: {how} {getattr(e, 'kept', 'during start-up; nothing was written')}", file=sys.stderr)
    return 129 if isinstance(e, HungUp) else 143 if isinstance(e, Terminated) else 130


def main(argv=None) -> int:
    "Entry point of the `resnetx` command: bad input is one line on stderr and exit code 2; Ctrl-C/SIGTERM one line."
    _safe_streams()
    _SIGNALLED.clear()
    for sig in (signal.SIGTERM, signal.SIGHUP): signal.signal(sig, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler: signal.signal(signal.SIGINT, _on_signal)
    p = parser()
    args = p.parse_args(argv)
    prog = f'resnetx {args.command}'
    try:
        check_paths(args)
        from fastai_resnetx.job import cli   # fastai, torch: seconds
        if _SIGNALLED: raise _stop_error(_SIGNALLED[0])   # one a library caught (a bare `except:`, a finaliser)
        cli.run(args)
    except KeyboardInterrupt as e: return _stopped(e)
    except (ValueError, OSError, MemoryError) as e:
        lines = str(e).strip().splitlines()
        # fastai's callback prefix
        if len(lines) > 1 and lines[0].startswith('Exception occured in `'): lines = lines[1:]
        msg = lines[0].strip() if lines else type(e).__name__
        print(f'{prog}: error: {msg}', file=sys.stderr)
        return 2
    return 0

