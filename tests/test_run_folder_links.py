"Run folders against links, pipes and crafted files: nothing is written through a link, no marker read hangs a run."
import fcntl, json, os, signal, subprocess, sys
from pathlib import Path

import pytest

from resnetx_cli import runs
from resnetx_cli.runs import OutputFolder, MARKER, LOCK, looks_like_run, written_files


def resnetx(*argv, timeout=60):
    "The real command, as a user runs it; (exit code, stderr lines)."
    r = subprocess.run([sys.executable, '-c', 'import sys, resnetx_cli; sys.exit(resnetx_cli.main())', *argv],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, [l for l in r.stderr.splitlines() if l.strip()]


@pytest.mark.parametrize('dangling', [False, True])
def test_lock_link_is_refused_and_its_target_untouched(tmp_path, dangling):
    out, target = tmp_path / 'out', tmp_path / 'victim.txt'
    out.mkdir()
    if not dangling: target.write_text('precious')
    (out / LOCK).symlink_to(target)
    code, err = resnetx('train', '--out', str(out))
    assert code == 2 and err == [f"resnetx train: error: `--out` {str(out)!r}: {LOCK} is a symbolic link; the tool "
                                 f"writes it itself: move it away"]
    assert (target.read_text() == 'precious') if not dangling else not target.exists()


def test_lock_link_made_after_the_checks_is_not_followed(tmp_path):
    out, target = tmp_path / 'out', tmp_path / 'victim.txt'
    out.mkdir()
    target.write_text('precious')
    (out / LOCK).symlink_to(target)        # between the front door's check and the lock
    with pytest.raises(ValueError, match=f"{LOCK} is a symbolic link"), OutputFolder(out): pass
    assert target.read_text() == 'precious'


@pytest.mark.parametrize('make, why', [
    (lambda p: os.mkfifo(p), 'is not a regular file (a pipe, socket or device)'),
    (lambda p: p.symlink_to('/dev/zero'), 'is a symbolic link'),
    (lambda p: p.mkdir(), 'is a folder'),
    (lambda p: p.write_bytes(b' ' * (runs.MARKER_MAX_BYTES + 1)), f'is {runs.MARKER_MAX_BYTES + 1} bytes long'),
])
def test_odd_marker_in_out_is_one_line_at_once(tmp_path, make, why):
    out = tmp_path / 'out'
    out.mkdir()
    make(out / MARKER)
    code, err = resnetx('train', '--out', str(out), timeout=30)   # a pipe read would hang: the timeout fails the test
    assert code == 2 and len(err) == 1 and f"{MARKER} {why}" in err[0], err


def test_deeply_nested_marker_is_not_a_marker_and_no_traceback(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / MARKER).write_text('[' * 20_000 + ']' * 20_000)     # 40 KB, far deeper than json's recursion limit
    assert written_files(out) is None
    code, err = resnetx('train', '--out', str(out))
    assert code == 2 and len(err) == 1 and "holds files `resnetx train` did not write" in err[0]


def test_a_pipe_named_like_the_marker_in_a_data_folder_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / MARKER)
    signal.alarm(10)                        # a blocking read would hang here: the alarm ends the test instead
    try: assert looks_like_run(tmp_path) is False
    finally: signal.alarm(0)


def test_lock_holder_text_is_printed_only_as_a_number(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    os.write(fd, b'rm -rf ~')
    fcntl.flock(fd, fcntl.LOCK_EX)          # another run holds it, with a crafted text in the file
    try:
        with pytest.raises(ValueError) as e, OutputFolder(out): pass
        assert 'rm -rf' not in str(e.value) and '(process ?)' in str(e.value)
    finally: os.close(fd)


def test_two_runs_never_hold_the_lock_at_once(tmp_path, monkeypatch):
    "Run A ends (unlinks its lock) between run B's open and flock while run C starts: B must not lock the orphan."
    out = tmp_path / 'out'
    a, b, c = OutputFolder(out), OutputFolder(out), OutputFolder(out)
    a.__enter__()
    real, interleaved = fcntl.flock, []
    def flock(fd, op):
        if not interleaved and op & fcntl.LOCK_EX and fd not in (a.fd,):
            interleaved.append(fd)          # B has opened the lock file; now A finishes and C starts
            a.__exit__(None, None, None)
            c.__enter__()
        return real(fd, op)
    monkeypatch.setattr(fcntl, 'flock', flock)
    with pytest.raises(ValueError, match='is being written by another run'): b.__enter__()
    assert c.fd is not None
    c.__exit__(None, None, None)


def test_wall_clock_counts_the_command_not_what_the_shell_ran_before_it():
    # bash execs the last command of `-c` into its own process: that process began before `sleep 2`
    r = subprocess.run(['bash', '-c', f'sleep 2 && {sys.executable} -c "from resnetx_cli.runs import process_seconds; '
                                      f'print(process_seconds())"'], capture_output=True, text=True, timeout=60)
    assert 0 < float(r.stdout) < 1.5, r.stdout


def test_study_outputs_are_not_written_through_a_planted_link_or_pipe(tmp_path):
    from fastai_resnetx.job.study import _append
    out, target = tmp_path / 'out', tmp_path / 'victim.txt'
    out.mkdir()
    target.write_text('precious')
    folder = OutputFolder(out, 'resnetx study')
    folder.temp('report.md').symlink_to(target)            # planted under the temporary name
    with pytest.raises(FileExistsError): folder.write_text('report.md', 'new')
    (out / 'results.jsonl').symlink_to(target)
    with pytest.raises(OSError): _append(out / 'results.jsonl', {'a': 1})
    os.mkfifo(out / 'pipe.jsonl')
    signal.alarm(10)                                         # a blocking open would wait for a reader
    try:
        with pytest.raises(OSError): _append(out / 'pipe.jsonl', {'a': 1})
    finally: signal.alarm(0)
    assert target.read_text() == 'precious'


def test_a_held_lock_is_refused_by_the_front_door_before_torch_is_imported(tmp_path):
    import subprocess, sys
    out, data = tmp_path / 'out', tmp_path / 'data'
    data.mkdir()
    code = ("import sys; from resnetx_cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(rc)")
    with OutputFolder(out, 'resnetx train'):                                 # this process is the run writing there
        res = subprocess.run([sys.executable, '-c', code, 'train', '--data', str(data), '--out', str(out)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stdout.strip() == 'torch not imported', (res.stdout, res.stderr)
        assert res.stderr.strip() == (f"resnetx train: error: `--out` {str(out)!r} is being written by another run "
                                      f"(process {os.getpid()}): wait for it or choose another folder"), res.stderr
    assert sorted(os.listdir(tmp_path)) == ['data']                          # the probe created and left nothing
