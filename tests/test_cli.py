"The `resnetx` command's front door: every argument checked, one line and exit code 2 for bad input, fast answers."
import subprocess, sys, time
from pathlib import Path

import pytest
from PIL import Image

import resnetx_cli
from resnetx_cli import main
from digit_folders import digit_folder, error_lines
from conftest import stop_signals_as_at_start

ROOT = Path(__file__).parents[1]


def one_error_line(capsys, argv) -> str:
    "The command's only stderr line for `argv`, after checking that it exits with code 2 and prints nothing else."
    try: code = main(argv)
    except SystemExit as e: code = e.code                      # argparse's own errors exit
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1, (argv, code, err)
    return err[0]


@pytest.mark.parametrize('argv, words', [
    (['train', '--epochs', '0'], 'argument --epochs: must be an integer in [1, 1000], got \'0\''),
    (['train', '--epochs', '2.5'], 'argument --epochs: must be an integer in [1, 1000]'),
    (['train', '--size', '100000'], 'argument --size: must be an integer in [8, 2048], got \'100000\''),
    (['train', '--size', '4'], 'argument --size: must be an integer in [8, 2048]'),
    (['train', '--bs', '1'], 'argument --bs: must be an integer in [2, 4096] (BatchNorm needs 2 images per batch)'),
    (['train', '--lr', 'fast'], 'argument --lr: must be a number in (0, 10), got \'fast\''),
    (['train', '--lr', '0'], 'argument --lr: must be a number in (0, 10)'),
    (['train', '--lr', 'nan'], 'argument --lr: must be a number in (0, 10)'),
    (['train', '--seed', '-1'], 'argument --seed: must be an integer in [0, 4294967295]'),
    (['train', '--fold', '0'], 'argument --fold: must be an integer in [1, 64]'),
    (['train', '--precision', 'fp16'], "argument --precision: invalid choice: 'fp16' (choose from"),
    (['summary', 'resnetx18', '--size', '2'], 'argument --size: must be an integer in [8, 2048]'),
    (['summary', 'resnetx18', '--fold', 'x'], 'argument --fold: must be an integer in [1, 64]'),
    (['summary', 'resnetx18', '--idx', '-1'], 'argument --idx: must be an integer in [0, 10000]'),
    (['plot', 'resnetx18', '--fold', '0'], 'argument --fold: must be an integer in [1, 64]'),
    (['plot', 'resnetx18', '--start-id', '-2'], 'argument --start-id: must be an integer in [0, 10000]'),
    (['plot', 'resnetx18', '--out', 'x.jpg'], "`--out` must end in .png, .pdf, .svg, got 'x.jpg'"),
    (['plot', 'resnetx18', '--out', 'no/such/folder/t.png'], "`--out` 'no/such/folder/t.png': folder 'no/such/folder' does not exist"),
    (['train', '--data', 'no/such/folder'], "`--data` folder 'no/such/folder' does not exist"),
])
def test_every_argument_checked_with_its_range(capsys, argv, words):
    assert words in one_error_line(capsys, argv)


def test_out_folder_checked_before_anything_runs(tmp_path, capsys):
    a_file = tmp_path / 'a_file'; a_file.write_text('x')
    (tmp_path / 'mine').mkdir(); (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    data = digit_folder(tmp_path / 'data', layout='flat')
    assert "is a file, not a folder" in one_error_line(capsys, ['train', '--out', str(a_file / 'out')])
    assert "cannot be written" in one_error_line(capsys, ['train', '--out', '/proc/resnetx/out'])
    assert "holds files `resnetx train` did not write ('notes.txt')" in one_error_line(capsys, ['train', '--out', str(tmp_path / 'mine')])
    assert "holds the `--data` folder" in one_error_line(capsys, ['train', '--data', str(data / '3'), '--out', str(data)])
    assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'keep me' and not (a_file.parent / 'out').exists()


def test_help_and_argument_errors_are_fast():
    "`resnetx --help` and a bad argument answer without importing torch or fastai (measured: well under 1.5 s)."
    for argv, code in ((['--help'], 0), (['train', '--help'], 0), (['train', '--epochs', '0'], 2), (['plot', 'x', '--out', 'x.gif'], 2)):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, '-c', 'import sys, resnetx_cli; code = resnetx_cli.main(); '
                              'assert "torch" not in sys.modules, "torch imported"; sys.exit(code)', *argv],
                             capture_output=True, text=True, timeout=60)
        seconds = time.perf_counter() - t0
        assert res.returncode == code and 'torch imported' not in res.stderr, (argv, res.stderr)
        assert seconds < 1.5, (argv, seconds)


@pytest.mark.slow
def test_console_script_and_module_share_the_front_door():
    cfg = (ROOT / 'setup.cfg').read_text()
    assert 'resnetx = resnetx_cli:main' in cfg and 'resnetx_cli*' in cfg
    from fastai_resnetx.job.train import TRAIN_DEFAULTS, IDX_DEFAULTS
    from fastai_resnetx.job.study import STUDY_DEFAULTS
    assert resnetx_cli.DEFAULTS == TRAIN_DEFAULTS                 # the --help defaults are the real ones
    assert resnetx_cli.IDX_DEFAULTS == IDX_DEFAULTS and resnetx_cli.STUDY_DEFAULTS == STUDY_DEFAULTS
    res = subprocess.run([sys.executable, '-m', 'fastai_resnetx', 'train', '--bs', '1'], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and error_lines(res.stderr) == [
        "resnetx train: error: argument --bs: must be an integer in [2, 4096] (BatchNorm needs 2 images per batch), got '1'"]


def test_summary_ours_torchvision_timm(capsys):
    assert main(['summary', 'resnetx18', '--size', '32', '--fold', '2']) == 0
    out = capsys.readouterr().out
    stage1 = [l for l in out.splitlines() if '(stage1)' in l]
    assert len(stage1) == 1 and 'Stage' in stage1[0] and stage1[0].endswith(': 2   layers') and 'FLOPs = 2 x MACs' in out
    assert main(['summary', 'resnet50', '--size', '224']) == 0
    assert '4.089G' in capsys.readouterr().out                    # torchvision's own _ops figure
    assert main(['summary', 'convnext_atto', '--size', '64', '--idx', '1']) == 0
    out = capsys.readouterr().out
    assert 'ConvNeXtStage' in out and '(stages)' not in out.splitlines()[0]   # drilled into child 1: the stages


@pytest.mark.parametrize('argv, words', [
    (['summary', 'convnext_atto', '--size', '8'], '`size` 8 does not work with convnext_atto:'),
    (['summary', 'vit_tiny_patch16_224', '--size', '32'], '`size` 32 does not work with vit_tiny_patch16_224:'),
    (['summary', 'resnetx18', '--fold', '8'], ('fold', '<= 7')),    # the model's own message names the largest fold
    (['plot', 'resnetx18', '--fold', '8', '--out', 'unused.png'], ('fold', '<= 7')),
    (['summary', 'resnetx51'], "'resnetx51' is not known"),
    (['summary', 'convnext_atto', '--fold', '2'], '`fold` only applies to ResNetX archs'),
])
def test_sizes_and_folds_an_arch_cannot_take(capsys, argv, words):
    line = one_error_line(capsys, argv)
    assert all(w in line for w in ([words] if isinstance(words, str) else words)), line


def test_size_that_cannot_fit_in_memory():
    from fastai_resnetx import resnetx50
    from fastai_resnetx.job.train import check_input_size
    model = resnetx50()
    check_input_size(model, 224, 'resnetx50', bs=2)               # fits
    with pytest.raises(ValueError, match=r"`size` 2048 with `bs` 4096 needs at least [\d.]+ GiB for resnetx50's activations"):
        check_input_size(model, 2048, 'resnetx50', bs=4096)


def test_plot_png_pdf_svg(tmp_path):
    for ext, magic in (('png', b'\x89PNG\r\n\x1a\n'), ('pdf', b'%PDF'), ('svg', b'<?xml')):
        assert main(['plot', 'resnetx18', '--fold', '2', '--out', str(tmp_path / f't.{ext}')]) == 0
        assert (tmp_path / f't.{ext}').read_bytes().startswith(magic), ext
    assert sorted(p.name for p in tmp_path.iterdir()) == ['t.pdf', 't.png', 't.svg']     # no temporary files left


def test_plot_topology(tmp_path):
    from fastai_resnetx import plot_topology, resnetx50
    from fastai_resnetx.job.plots import skip_kinds
    fig = plot_topology(resnetx50, fold=3, figsize=(10, 3), dpi=100, out=tmp_path / 't.png')
    assert Image.open(tmp_path / 't.png').size == (1000, 300)
    m = resnetx50(fold=3)
    assert [(s, l) for s, l, _ in fig.skips] == m.plan.skips()     # the drawn skips are the model's plan
    assert [k for *_, k in fig.skips] == [k for *_, k in skip_kinds(m)]
    assert sum(k == 'projection' for *_, k in fig.skips) == 10    # 3 where a ResNet has them + 7 extra at fold 3


def test_a_callbacks_error_is_its_own_line_without_fastais_prefix(tmp_path, capsys, monkeypatch):
    # fastai re-raises a callback's error with "Exception occured in `CB` when calling event `e`:" as its first line
    from fastai_resnetx.job import cli
    def run(args): raise ValueError("Exception occured in `BF16MixedPrecision` when calling event `before_step`:\n\tthe real reason")
    monkeypatch.setattr(cli, 'run', run)
    assert one_error_line(capsys, ['train', '--out', str(tmp_path / 'o')]) == 'resnetx train: error: the real reason'


@pytest.mark.parametrize('sig, code, line', [
    ('SIGINT', 130, 'resnetx: interrupted during start-up; nothing was written'),
    ('SIGTERM', 143, 'resnetx: terminated (SIGTERM) during start-up; nothing was written'),
    ('SIGHUP', 129, 'resnetx: hung up (SIGHUP) during start-up; nothing was written')])
def test_a_signal_a_library_swallows_during_start_up_still_stops_the_run(tmp_path, capsys, monkeypatch, sig, code, line):
    # an import's bare `except:` (or a finaliser, where Python only prints the error) can catch the signal's exception
    import signal
    from fastai_resnetx.job import cli
    ran, sig = [], getattr(signal, sig)
    monkeypatch.setattr(cli, 'run', ran.append)
    def swallowing(args):
        try: signal.raise_signal(sig)
        except BaseException: pass
    monkeypatch.setattr(resnetx_cli, 'check_paths', swallowing)
    with stop_signals_as_at_start(): got = main(['train', '--out', str(tmp_path / 'out')])
    assert (got, error_lines(capsys.readouterr().err), ran) == (code, [line], [])
