"""What each `resnetx` command parses its arguments to: the defaults the README and --help give, each option's type and
limits, and one-line errors for a missing command. In process, before anything heavy: the parser alone."""
from importlib.metadata import version
from pathlib import Path

import pytest

from resnetx_cli import main, parser

# by hand from the README's tour and each --help (train leaves its defaults to the job: None until the data is known)
TRAIN = dict(command='train', data=None, labels=None, arch=None, fold=None, epochs=None, size=None, bs=None, lr=None,
             pretrained=False, precision=None, out=Path('runs/latest'), seed=42)
SUMMARY = dict(command='summary', arch='resnetx18', size=224, fold=None, idx=None, verbose=False)
PLOT = dict(command='plot', arch='resnetx18', fold=1, start_id=None, end_id=None, out=Path('topology.png'))
STUDY = dict(command='study', data=Path('fashion-mnist'), arch='resnetx_small', folds=(1, 2, 3), seeds=5, epochs=5,
             bs=256, lr=1e-2, pad=0, flip=True, erase=0., stage_local=False, equal_cost=False, warm=None, out=None,
             report=None)


@pytest.mark.parametrize('argv, want', [(['train'], TRAIN), (['summary', 'resnetx18'], SUMMARY),
                                        (['plot', 'resnetx18'], PLOT), (['study'], STUDY)])
def test_defaults_are_the_documented_ones(argv, want):
    assert vars(parser().parse_args(argv)) == want


def test_each_option_parses_to_its_type():
    p = parser()
    a = p.parse_args(['train', '--data', 'd', '--labels', 'l.csv', '--out', 'o', '--pretrained', '--precision', 'bf16'])
    assert (a.data, a.labels, a.out, a.pretrained, a.precision) == (Path('d'), Path('l.csv'), Path('o'), True, 'bf16')
    assert p.parse_args(['train', '--precision', 'fp32']).precision == 'fp32'
    a = p.parse_args(['summary', 'resnet50', '--idx', '0', '5', '--verbose', '--size', '64', '--fold', '3'])
    assert (a.arch, a.idx, a.verbose, a.size, a.fold) == ('resnet50', [0, 5], True, 64, 3)
    assert p.parse_args(['summary', 'resnet50', '--idx']).idx == []           # `--idx` alone: the model itself
    a = p.parse_args(['study', '--folds', '2,4', '--no-flip', '--warm', 'w.pth', '--report', 'r', '--stage-local',
                      '--equal-cost', '--pad', '4', '--erase', '0.25', '--lr', '0.5', '--seeds', '3'])
    assert (a.folds, a.flip, a.warm, a.report, a.stage_local, a.equal_cost, a.pad, a.erase, a.lr, a.seeds) == (
        (2, 4), False, Path('w.pth'), Path('r'), True, True, 4, 0.25, 0.5, 3)
    a = p.parse_args(['plot', 'resnetx50', '--fold', '2', '--start-id', '0', '--end-id', '1', '--out', 'x.svg'])
    assert (a.fold, a.start_id, a.end_id, a.out) == (2, 0, 1, Path('x.svg'))


def _refused(capsys, argv) -> str:
    "The one line `resnetx argv` stops with (exit 2), or '' when the argument check passes it."
    try: parser().parse_args(argv)
    except SystemExit as e:
        err = capsys.readouterr().err.splitlines()
        assert e.code == 2 and len(err) == 1, (argv, e.code, err)
        return err[0]
    return ''


# each option's limits (ends accepted, one step past refused); test_cli_help checks those its help states
LIMITS = [(['summary', 'resnetx18'], '--size', (8, 2048), (7, 2049)),
          (['summary', 'resnetx18'], '--fold', (1, 64), (0, 65)),
          (['summary', 'resnetx18', '--idx', '1'], '--idx', (0, 10_000), (-1, 10_001)),
          (['plot', 'resnetx18'], '--fold', (1, 64), (0, 65)),
          (['plot', 'resnetx18'], '--start-id', (0, 10_000), (-1, 10_001)),
          (['plot', 'resnetx18'], '--end-id', (1, 10_000), (0, 10_001)),
          (['study'], '--seeds', (1, 1000), (0, 1001)),
          (['study'], '--epochs', (1, 1000), (0, 1001)),
          (['study'], '--bs', (2, 4096), (1, 4097)),
          (['study'], '--lr', (1e-9, 9.99), (0, 10)),
          (['study'], '--pad', (0, 64), (-1, 65)),
          (['study'], '--folds', (1, 64), (0, 65)),
          (['train'], '--seed', (0, 2**32 - 1), (-1, 2**32))]


@pytest.mark.parametrize('cmd, opt, inside, outside', LIMITS)
def test_each_option_keeps_to_its_limits(capsys, cmd, opt, inside, outside):
    for v in inside: assert _refused(capsys, [*cmd, opt, str(v)]) == '', (opt, v)
    for v in outside:
        assert _refused(capsys, [*cmd, opt, str(v)]).startswith(f"resnetx {cmd[0]}: error: argument {opt}"), (opt, v)


def test_no_command_or_a_bad_one_is_one_line(capsys):
    assert _refused(capsys, []) == 'resnetx: error: the following arguments are required: command'
    assert _refused(capsys, ['fit']).startswith("resnetx: error: argument command: invalid choice: 'fit'")
    assert _refused(capsys, ['train', '--precision', 'fp16']).startswith(
        "resnetx train: error: argument --precision: invalid choice: 'fp16'")
    assert _refused(capsys, ['train', '--pretrained', 'yes']) == 'resnetx: error: unrecognized arguments: yes'


def test_version_says_the_installed_one(capsys):
    with pytest.raises(SystemExit) as e: main(['--version'])
    assert e.value.code == 0 and capsys.readouterr().out == f"resnetx (fastai_resnetx) {version('fastai_resnetx')}\n"


def test_help_names_the_file_and_folder_arguments(capsys):
    with pytest.raises(SystemExit): main(['study', '--help'])
    out = capsys.readouterr().out
    assert '--warm FILE' in out and '--report DIR' in out and '--out OUT' in out
