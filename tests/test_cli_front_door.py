"""The front door's own parts, in process and quick: the streams it makes safe, the path checks before the heavy
import, how an error or a stop becomes its one line. (test_cli and test_run_folder run the whole command.)"""
import io, os, signal, subprocess, sys, tempfile

import pytest

import resnetx_cli
from resnetx_cli import _PipeSafe, _safe_streams, main
from fastai_resnetx.job import cli   # the job the front door hands over to (imported here: seconds)
from digit_folders import digit_folder, error_lines
from conftest import stop_signals_as_at_start
from test_cli import one_error_line


def fd_target(fd:int) -> str: return os.readlink(f'/proc/self/fd/{fd}')


@pytest.mark.parametrize('inside', [False, True], ids=['closed by the shell', 'closed once running'])
@pytest.mark.parametrize('fds', [[0], [1], [2], [1, 2], [0, 1, 2]])
def test_closed_standard_fds_become_dev_null(tmp_path, fds, inside):
    "stdin, stdout or stderr closed by the caller (`>&-`) or later: /dev/null in its place, so no file opened later takes it."
    close = f"[os.close(fd) for fd in {fds}]; " if inside else ''   # Python's own sys.stdout then still stands
    code = (f"import os; {close}import resnetx_cli; resnetx_cli._safe_streams(); os.write(1, b'x'); os.write(2, b'x'); "
            f"open({str(tmp_path / 'fds')!r}, 'w').write(chr(10).join(os.readlink(f'/proc/self/fd/{{fd}}') for fd in (0, 1, 2)))")
    # fd 3 open, as a parent's pipe may be: a closed fd 2 is then not filled by chance by the next file opened
    shell = '3</dev/zero ' + ('' if inside else ' '.join(f'{fd}>&-' for fd in fds))
    subprocess.run(['bash', '-c', f'{sys.executable} -c "{code}" {shell}'], timeout=60)
    targets = (tmp_path / 'fds').read_text().splitlines()         # written only if all three are open
    assert len(targets) == 3 and [targets[fd] for fd in fds] == ['/dev/null'] * len(fds)


def test_missing_or_closed_python_streams_write_to_dev_null(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, 'stdout', None)
    monkeypatch.setattr(sys, 'stderr', closed)
    _safe_streams()
    for s in (sys.stdout, sys.stderr):
        assert isinstance(s, _PipeSafe) and (s.stream.name, s.stream.mode, s.stream.closed) == (os.devnull, 'w', False)
        assert s.write('dropped') == 7
    wrapped = sys.stdout
    _safe_streams()                                               # a second call wraps nothing twice
    assert sys.stdout is wrapped and not isinstance(sys.stdout.stream, _PipeSafe)


class _Recorder:
    "A stream as a notebook or a logging tool may set: `write` and `flush` only, no `closed`."
    def __init__(self): self.text = ''
    def write(self, s): self.text += s; return len(s)
    def flush(self): pass


def test_a_stream_without_closed_is_kept(monkeypatch):
    mine = _Recorder()
    monkeypatch.setattr(sys, 'stdout', mine)
    _safe_streams()
    print('kept')
    assert sys.stdout.stream is mine and mine.text == 'kept\n'


def test_a_character_the_locale_cannot_encode_is_escaped(monkeypatch):
    raw = io.BytesIO()
    monkeypatch.setattr(sys, 'stdout', io.TextIOWrapper(raw, encoding='ascii', errors='strict'))   # LC_ALL=C
    _safe_streams()
    print('caf\u00e9')
    sys.stdout.flush()
    assert raw.getvalue() == b'caf\\xe9\n'


def test_a_broken_pipe_sends_the_rest_to_dev_null():
    "A reader that went away (`| head -1`): the write is dropped and the stream's fd now points at /dev/null."
    r, w = os.pipe()
    os.close(r)                                                   # the reader is gone
    stream = os.fdopen(w, 'w', buffering=1)
    s = _PipeSafe(stream)
    try:
        assert s.write('line\n') == 5 and fd_target(w) == '/dev/null' and s.stream is stream
        s.write('more\n'); s.flush()                              # the interpreter's last flush: no error either
        assert s.fileno() == w and s.isatty() is False           # the rest delegated to the stream
    finally: stream.close()


class _Gone(io.StringIO):
    "A stream with no file descriptor whose reader went away."
    def write(self, s): raise BrokenPipeError(32, 'Broken pipe')
    def flush(self): raise BrokenPipeError(32, 'Broken pipe')
    def fileno(self): raise io.UnsupportedOperation('fileno')


def test_a_broken_pipe_without_a_file_descriptor_opens_dev_null_for_writing():
    s = _PipeSafe(_Gone())
    assert s.write('line\n') == 5 and (s.stream.name, s.stream.mode) == (os.devnull, 'w')
    s.stream.close()
    s = _PipeSafe(_Gone())
    s.flush()
    assert (s.stream.name, s.stream.mode) == (os.devnull, 'w') and s.write('x') == 1
    s.stream.close()
    closed = open(os.devnull, 'w')
    closed.close()
    assert _PipeSafe(closed).isatty() is False                    # isatty() of a closed file raises ValueError


def test_version_of_an_uninstalled_checkout(monkeypatch, capsys):
    import importlib.metadata as md
    def missing(name): raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, 'version', missing)
    with pytest.raises(SystemExit): main(['--version'])
    assert capsys.readouterr().out == 'resnetx (fastai_resnetx) unknown (not installed)\n'


def test_path_checks_before_anything_heavy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, 'run', lambda args: pytest.fail(f'ran with {args}'))
    data, file = digit_folder(tmp_path / 'data'), tmp_path / 'file.txt'
    file.write_text('x')
    out = str(tmp_path / 'out')
    assert one_error_line(capsys, ['train', '--data', str(tmp_path / 'nope'), '--out', out]) == (
        f"resnetx train: error: `--data` folder {str(tmp_path / 'nope')!r} does not exist")
    assert one_error_line(capsys, ['train', '--data', str(file), '--out', out]) == (
        f"resnetx train: error: `--data` {str(file)!r} is a file, not a folder")
    assert one_error_line(capsys, ['train', '--labels', 'l.csv', '--out', out]) == (
        "resnetx train: error: `--labels` needs `--data`: the folder the CSV's file names are in")
    assert one_error_line(capsys, ['train', '--data', str(data), '--labels', str(tmp_path / 'l.csv'), '--out', out]) == (
        f"resnetx train: error: `--labels` file {str(tmp_path / 'l.csv')!r} does not exist")
    assert one_error_line(capsys, ['train', '--data', str(data), '--labels', str(tmp_path), '--out', out]) == (
        f"resnetx train: error: `--labels` {str(tmp_path)!r} is not a file")
    assert one_error_line(capsys, ['train', '--data', 'fashion-mnist', '--labels', 'l.csv', '--out', out]) == (
        "resnetx train: error: `--labels` is for image folders, not for 'fashion-mnist'")
    assert one_error_line(capsys, ['train', '--data', 'fashion-mnist', '--out', str(file)]) == (
        f"resnetx train: error: `--out` {str(file)!r} is a file, not a folder")
    assert one_error_line(capsys, ['study', '--out', out, '--report', out]) == (
        "resnetx study: error: give `--out DIR` (run or resume a study) or `--report DIR` (report its finished runs)")
    def no_probe(**kwargs): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(tempfile, 'mkdtemp', no_probe)
    assert one_error_line(capsys, ['plot', 'resnetx18', '--out', str(tmp_path / 'x.png')]) == (
        f"resnetx plot: error: `--out` {str(tmp_path)!r} cannot be written: Permission denied ({tmp_path})")


def test_a_labels_file_named_relative_to_the_data_folder(tmp_path, capsys, monkeypatch):
    "fastai's from_csv reads the CSV's name relative to the folder: so does --labels, when no such file is here."
    seen = []
    monkeypatch.setattr(cli, 'run', lambda args: seen.append(args.labels))
    data = digit_folder(tmp_path / 'data')
    (data / 'labels.csv').write_text('name,label\n')
    monkeypatch.chdir(tmp_path)
    assert main(['train', '--data', 'data', '--labels', 'labels.csv', '--out', 'out']) == 0
    (tmp_path / 'labels.csv').write_text('name,label\n')            # a file of that name here: that one
    assert main(['train', '--data', 'data', '--labels', 'labels.csv', '--out', 'out']) == 0
    assert [str(p) for p in seen] == ['data/labels.csv', 'labels.csv']


@pytest.mark.parametrize('error, line', [
    (ValueError("Exception occured in `Recorder` when calling event `after_batch`:\n\tthe real reason"), 'the real reason'),
    (ValueError("Exception occured in `Recorder` alone"), 'Exception occured in `Recorder` alone'),
    (ValueError("first line\nsecond line"), 'first line'),
    (ValueError(), 'ValueError'), (OSError('  '), 'OSError'), (MemoryError('no room'), 'no room')])
def test_an_error_is_its_first_line_less_fastais_prefix(tmp_path, capsys, monkeypatch, error, line):
    def fail(args): raise error
    monkeypatch.setattr(cli, 'run', fail)
    assert one_error_line(capsys, ['train', '--out', str(tmp_path / 'out')]) == f'resnetx train: error: {line}'


@pytest.mark.parametrize('error, code, line', [
    (KeyboardInterrupt(), 130, 'resnetx: interrupted during start-up; nothing was written'),
    (resnetx_cli.Terminated(), 143, 'resnetx: terminated (SIGTERM) while training (epoch 2 of 5); nothing was written'),
    (resnetx_cli.HungUp(), 129, 'resnetx: hung up (SIGHUP) while training (epoch 2 of 5); nothing was written')])
def test_a_stop_says_where_the_job_was(tmp_path, capsys, monkeypatch, error, code, line):
    if isinstance(error, resnetx_cli.Terminated): error.kept = 'while training (epoch 2 of 5); nothing was written'
    def stop(args): raise error
    monkeypatch.setattr(cli, 'run', stop)
    assert main(['train', '--out', str(tmp_path / 'out')]) == code
    assert error_lines(capsys.readouterr().err) == [line]


@pytest.mark.parametrize('sig, code, line', [
    ('SIGINT', 130, 'resnetx: interrupted during start-up; nothing was written'),
    ('SIGTERM', 143, 'resnetx: terminated (SIGTERM) during start-up; nothing was written'),
    ('SIGHUP', 129, 'resnetx: hung up (SIGHUP) during start-up; nothing was written')])
def test_a_signal_during_the_checks_is_its_own_stop(tmp_path, capsys, monkeypatch, sig, code, line):
    "The handlers `main` installs raise the signal's own kind (the test in test_cli has a library swallow it first)."
    sig = getattr(signal, sig)
    monkeypatch.setattr(resnetx_cli, 'check_paths', lambda args: signal.raise_signal(sig))
    with stop_signals_as_at_start(): got = main(['train', '--out', str(tmp_path / 'out')])
    assert (got, error_lines(capsys.readouterr().err)) == (code, [line])
