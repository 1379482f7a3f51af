"What `resnetx ... --help` says is what the command does: each stated default and range checked against the job."
import pytest

from resnetx_cli import main
from fastai_resnetx.job.train import TRAIN_DEFAULTS, IDX_DEFAULTS
from fastai_resnetx.job.study import STUDY_DEFAULTS


def help_of(capsys, *argv) -> dict:
    "The help text of each option of `resnetx *argv`, keyed by option name, whitespace as one space."
    with pytest.raises(SystemExit) as e: main([*argv, '--help'])
    assert e.value.code == 0
    opts, name = {}, None
    for line in capsys.readouterr().out.split('options:', 1)[1].splitlines():
        if line.startswith('  -'): name = line.split()[0].rstrip(',')     # argparse starts each option at column 2
        if name: opts[name] = ' '.join((opts.get(name, '') + ' ' + line).split())
    return opts


def _errors(capsys, argv) -> bool:
    "Whether `resnetx argv` stops at the argument check (exit 2, one line naming the argument)."
    try: code = main(argv)
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err
    return code == 2 and 'error: argument' in err


TRAIN_KEYS = ['arch', 'fold', 'epochs', 'bs', 'lr']


@pytest.mark.parametrize('key', TRAIN_KEYS)
def test_train_help_gives_both_defaults_of_the_job(capsys, key):
    "`resnetx train --help` gives the digits'/folders' default and the idx data sets' default, the job's own."
    h = help_of(capsys, 'train')['--' + key]
    assert f"default {TRAIN_DEFAULTS[key]}; with an idx data set {IDX_DEFAULTS[key]}" in h, h


def test_train_help_size_seed_and_out(capsys):
    h = help_of(capsys, 'train')
    assert f"(default {TRAIN_DEFAULTS['size']}; an idx data set is used at its own size)" in h['--size']
    assert f"(default {TRAIN_DEFAULTS['seed']})" in h['--seed'] and '(default runs/latest)' in h['--out']
    assert h['--precision'].endswith('(default: the faster of the two for this arch, size and machine)')
    for name in ('--data', '--labels', '--pretrained', '--out'): assert len(h[name].split()) > 8, name


@pytest.mark.parametrize('key', ['arch', 'seeds', 'epochs', 'bs', 'lr'])
def test_study_help_gives_the_jobs_defaults(capsys, key):
    h = help_of(capsys, 'study')['--' + key]
    assert f"(default {STUDY_DEFAULTS[key]:g})" in h if key == 'lr' else f"(default {STUDY_DEFAULTS[key]})" in h, h


def test_study_help_data_pad_flip_erase(capsys):
    h = help_of(capsys, 'study')
    assert f"(default {STUDY_DEFAULTS['data']})" in h['--data'] and STUDY_DEFAULTS['pad'] == 0
    assert '(default 0: no crop)' in h['--pad'] and STUDY_DEFAULTS['flip'] is True and 'default on' in h['--flip']
    assert STUDY_DEFAULTS['erase'] == 0 and '(default 0)' in h['--erase']
    for name in ('--folds', '--stage-local', '--equal-cost', '--warm', '--out', '--report'):
        assert len(h[name].split()) > 6, name


# (the command, an argument that stops it after the argument check, the option, the range its help states,
#  values at the ends of that range, values just outside it)
TRAIN_STOP = ['train', '--out', f'{__file__}/out']          # --out inside a file: refused after the argument check
RANGES = [
    (TRAIN_STOP, '--epochs', 'in [1, 1000]', (1, 1000), (0, 1001)),
    (TRAIN_STOP, '--size', 'in [8, 2048]', (8, 2048), (7, 2049)),
    (TRAIN_STOP, '--bs', 'in [2, 4096]', (2, 4096), (1, 4097)),
    (TRAIN_STOP, '--lr', 'in (0, 10)', (1e-6, 9.99), (0, 10)),
    (['study'], '--erase', 'in [0, 1]', (0, 1), (-0.01, 1.01)),          # neither --out nor --report: refused after
    (['plot', 'resnetx18', '--out', 'x.gif'], '--start-id', '(>= 0)', (0, 10_000), (-1,)),
    (['plot', 'resnetx18', '--out', 'x.gif'], '--end-id', '(>= 1)', (1, 10_000), (0,)),
]


@pytest.mark.parametrize('cmd, opt, says, inside, outside', RANGES)
def test_stated_ranges_are_the_checked_ones(capsys, cmd, opt, says, inside, outside):
    "The range in an option's help is the one the argument check applies: its ends pass, values past them fail."
    assert says in help_of(capsys, *cmd[:2 if cmd[0] == 'plot' else 1])[opt]
    for v in inside: assert not _errors(capsys, [*cmd, opt, str(v)]), (opt, v)
    for v in outside: assert _errors(capsys, [*cmd, opt, str(v)]), (opt, v)


def test_summary_help_size_and_idx(capsys):
    "What `resnetx summary --help` states (test_cli_arguments checks that the parser keeps to it)."
    h = help_of(capsys, 'summary', 'resnetx18')
    assert 'in [8, 2048] (default 224)' in h['--size'] and '(index path, each >= 0)' in h['--idx']


def test_train_help_states_the_folder_split(capsys):
    "The held-out share and seed `--data`'s help gives for class folders are `read_folder`'s defaults."
    import inspect
    from fastai_resnetx.job.data import read_folder
    args = inspect.signature(read_folder).parameters
    said = f"a random {args['valid_pct'].default:.0%} of each class is held out, seed {args['seed'].default}"
    assert said == 'a random 20% of each class is held out, seed 42' and said in help_of(capsys, 'train')['--data']


def test_fold_help_says_who_sets_the_largest(capsys):
    assert "the arch sets the largest (default 2; with an idx data set 1)" in help_of(capsys, 'train')['--fold']
    assert "(ResNetX archs only)" in help_of(capsys, 'summary', 'resnetx18')['--fold']
    assert "(default 1)" in help_of(capsys, 'plot', 'resnetx18')['--fold']
    assert "(default topology.png)" in help_of(capsys, 'plot', 'resnetx18')['--out']
