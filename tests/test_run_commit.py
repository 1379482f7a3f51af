"""How a run puts its outputs in place (`resnetx_cli.runs.OutputFolder`), quick and in-process: signals wait for the
renames, a killed run's leftovers are cleaned or finished, and only the tool's own temporary names are ever removed.
(The real command stopped by a real signal from another process is in test_train_job.py, marked slow.)"""
import json, os, signal, time
from pathlib import Path

import pytest

from resnetx_cli.runs import OutputFolder, MARKER, LOCK
from resnetx_cli.runs import _SignalsWait


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_waits_until_the_block_is_done_then_arrives_once(sig):
    got = []
    before_handler = signal.signal(sig, lambda n, f: got.append(n))
    before_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        with _SignalsWait():
            os.kill(os.getpid(), sig); os.kill(os.getpid(), sig)      # twice: one arrival, as an unblocked pair would
            time.sleep(0.05)
            assert got == []                                          # not while the renames go on
        assert got == [sig]                                           # after them, to the run's own handler
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before_mask
    finally: signal.signal(sig, before_handler)


def test_stale_temporaries_of_a_killed_run_go_and_every_other_name_stays(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    ours = ['.export.pkl.tmp-123', '.metrics.json.tmp-9', '.' + MARKER + '.tmp-77']
    others = ['.notes.md.tmp-5', '.export.pkl.tmp-x', '.results.jsonl.tmp-7', 'export.pkl.tmp-3', '.export.pkl.tmp-']
    for n in ours + others: (out / n).write_text('x')
    with OutputFolder(out) as folder:
        assert sorted(os.listdir(out)) == sorted(others + [LOCK])      # a killed train run's own temporaries went
        assert folder.finished == []
    assert sorted(os.listdir(out)) == sorted(others)                   # the lock went too; nothing else touched
    with OutputFolder(out, 'resnetx study'):                            # the study's own temporary name
        assert '.results.jsonl.tmp-7' not in os.listdir(out)


def test_a_commit_writes_the_marker_listing_every_output_the_folder_holds(tmp_path):
    out = tmp_path / 'out'
    with OutputFolder(out) as folder:
        folder.write_text('metrics.json', '{}'); folder.write_text('export.pkl', 'e')
        folder.commit(['metrics.json', 'export.pkl'])
        assert folder.committed
    with OutputFolder(out) as folder:
        folder.write_text('loss.png', 'l')
        folder.commit(['loss.png'])
    marker = json.loads((out / MARKER).read_text())
    assert marker['files'] == ['export.pkl', 'loss.png', 'metrics.json'] and marker['written_by'] == 'resnetx train'
    assert sorted(os.listdir(out)) == ['.resnetx-run.json', 'export.pkl', 'loss.png', 'metrics.json']
    study = tmp_path / 'study'   # `also`: listed, though the command wrote it itself
    with OutputFolder(study, 'resnetx study') as folder:
        folder.write_text('study.json', '{}')
        folder.commit(['study.json'], also=['results.jsonl'])
    assert json.loads((study / MARKER).read_text())['files'] == ['results.jsonl', 'study.json']


def test_a_run_that_stops_before_its_commit_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / 'a' / 'b'
    with pytest.raises(RuntimeError), OutputFolder(out) as folder:
        assert out.is_dir() and (out / LOCK).is_file()
        folder.write_text('export.pkl', 'half')
        assert int((out / LOCK).read_text()) == os.getpid()             # the lock names its holder
        raise RuntimeError
    assert not (tmp_path / 'a').exists()                                # made for the run, and nothing kept: removed
    (tmp_path / 'a').mkdir(); (tmp_path / 'a' / 'mine.txt').write_text('m')
    with pytest.raises(RuntimeError), OutputFolder(out): raise RuntimeError
    assert os.listdir(tmp_path / 'a') == ['mine.txt']                   # only what it made, only if empty


def test_a_forged_switch_in_the_marker_moves_only_the_commands_own_outputs(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / MARKER).write_text(json.dumps({'written_by': 'resnetx train', 'files': ['export.pkl'],
                                          'switching': {'pid': 42, 'files': ['export.pkl', 'study.json', '../x']}}))
    for n in ('.export.pkl.tmp-42', '.study.json.tmp-42'): (out / n).write_text('new')
    os.symlink(tmp_path / 'elsewhere', out / '.loss.png.tmp-42')
    with OutputFolder(out) as folder: assert folder.finished == ['export.pkl']
    assert (out / 'export.pkl').read_text() == 'new' and not (out / 'study.json').exists()
    assert not (tmp_path / 'x').exists() and 'switching' not in json.loads((out / MARKER).read_text())


def test_a_signal_that_another_thread_receives_also_waits(monkeypatch):
    "The kernel hands a process signal to any thread not blocking it (torch's): the handler still waits for the block."
    import threading
    got, sig = [], signal.SIGTERM
    before = signal.signal(sig, lambda n, f: got.append(n))
    helper = threading.Thread(target=time.sleep, args=(1,))         # a thread that does not block the signal
    helper.start()
    try:
        with _SignalsWait():
            signal.pthread_kill(helper.ident, sig)                     # delivered to that thread, not this one
            time.sleep(0.05)
            assert got == []
        assert got == [sig]
    finally:
        helper.join(); signal.signal(sig, before)


def test_the_front_door_probe_refuses_a_held_lock_in_process(tmp_path, monkeypatch):
    from resnetx_cli.runs import _check_not_running
    out = tmp_path / 'out'
    out.mkdir()
    assert _check_not_running(out) is None and os.listdir(out) == []        # no lock file: nothing made
    monkeypatch.delenv('RANK', raising=False)
    with OutputFolder(out):
        with pytest.raises(ValueError) as e: _check_not_running(out)
        assert str(e.value) == (f"`--out` {str(out)!r} is being written by another run (process {os.getpid()}): "
                                f"wait for it or choose another folder")
        monkeypatch.setenv('RANK', '0')
        with pytest.raises(ValueError): _check_not_running(out)
        monkeypatch.setenv('RANK', '1')                                     # torchrun's rank 1: rank 0 holds it
        assert _check_not_running(out) is None
    monkeypatch.setenv('RANK', '0')
    (out / LOCK).write_text('123')                                          # a lock file nobody holds
    assert _check_not_running(out) is None


@pytest.mark.parametrize('text, shown', [(b'4242', '4242'), (b' 77\n', '77'), (b'', '?'), (b'12ab', '?'),
                                         (b'9' * 40, '9' * 32), (b'\xff12', '?'), (None, '?')])
def test_the_refusal_names_the_holder_only_by_a_number(tmp_path, text, shown):
    import fcntl
    from resnetx_cli.runs import _busy
    (tmp_path / LOCK).write_bytes(text or b'')
    fd = os.open(tmp_path / LOCK, os.O_RDONLY)
    if text is None: os.close(fd)                                         # a lock that cannot be read: no number
    try: assert f'(process {shown})' in str(_busy(tmp_path, fd)) and str(tmp_path) in str(_busy(tmp_path, fd))
    finally:
        if text is not None: os.close(fd)


def test_names_only_the_tool_writes():
    from resnetx_cli.runs import _ours
    for name in (MARKER, LOCK, '.export.pkl.tmp-12', '.results.jsonl.tmp-3', f'.{MARKER}.tmp-9'):
        assert _ours(name), name
    for name in ('export.pkl', '.notes.md.tmp-12', '.export.pkl.tmp-', 'x.resnetx-lock', '.export.pkl.tmp-1a'):
        assert not _ours(name), name


def test_outputs_are_written_with_the_usual_file_mode(tmp_path):
    umask = os.umask(0o022); os.umask(umask)
    with OutputFolder(tmp_path / 'out') as folder:
        folder.write_text('metrics.json', '{}')
        folder.commit(['metrics.json'])
    import stat
    assert stat.S_IMODE(os.stat(tmp_path / 'out' / 'metrics.json').st_mode) == 0o644 & ~umask


def test_process_seconds_counts_from_the_commands_import():
    from resnetx_cli.runs import process_seconds, _T0
    t = process_seconds()
    assert 0 <= t <= time.time() - _T0 + 1 and t < 24 * 3600


def test_run_and_study_folders_are_told_apart(tmp_path):
    from resnetx_cli.runs import is_run_folder, looks_like_run
    study = tmp_path / 'study'
    with OutputFolder(study, 'resnetx study') as folder:
        folder.write_text('study.json', '{}'); folder.commit(['study.json'])
    with OutputFolder(study, 'resnetx study') as folder:                  # a second commit keeps the first's names
        folder.write_text('report.md', '#'); folder.commit(['report.md'])
    assert json.loads((study / MARKER).read_text())['files'] == ['report.md', 'study.json']
    assert is_run_folder(study, 'resnetx study') and not is_run_folder(study) and looks_like_run(study)
    half = tmp_path / 'half'                                              # one of a run's two key outputs: data
    half.mkdir(); (half / 'metrics.json').write_text('{}')
    assert not looks_like_run(half)
    (half / 'export.pkl').write_bytes(b'x'); (half / '.ipynb_checkpoints').mkdir()   # a hidden folder is no data
    assert looks_like_run(half)
    (half / 'sub').mkdir()
    assert not looks_like_run(half)


def test_a_folder_of_someone_elses_files_is_refused_naming_four_and_counting_the_rest(tmp_path):
    from resnetx_cli.runs import check_out_folder
    out = tmp_path / 'out'
    out.mkdir()
    for n in 'abcdef': (out / f'{n}.txt').write_text(n)
    with pytest.raises(ValueError) as e: check_out_folder(out)
    assert "holds files `resnetx train` did not write ('a.txt', 'b.txt', 'c.txt', 'd.txt' and 2 more)" in str(e.value)
    for n in 'ef': (out / f'{n}.txt').unlink()
    with pytest.raises(ValueError) as e: check_out_folder(out)
    assert "('a.txt', 'b.txt', 'c.txt', 'd.txt'): choose" in str(e.value)


def test_out_folder_refusals_word_for_word(tmp_path):
    "Each refusal of `check_out_folder` names the argument, the folder and what to do (in-process, exact text)."
    from resnetx_cli.runs import check_out_folder
    def refusal(out, data=None) -> str:
        with pytest.raises(ValueError) as e: check_out_folder(out, data)
        return str(e.value)
    f = tmp_path / 'file'; f.write_text('x')
    assert refusal(f) == f"`--out` {str(f)!r} is a file, not a folder"
    data = tmp_path / 'data'; data.mkdir()
    assert refusal(tmp_path, data) == (f"`--out` {str(tmp_path)!r} holds the `--data` folder: the run would replace "
                                       f"it; choose another folder")
    assert refusal(data, data).startswith(f"`--out` {str(data)!r} holds the `--data` folder")
    odd = tmp_path / 'odd'; (odd / MARKER).mkdir(parents=True)
    assert refusal(odd) == f"`--out` {str(odd)!r}: {MARKER} is a folder; the tool writes it itself: move it away"
    locked = tmp_path / 'locked'; locked.mkdir(); os.symlink(tmp_path / 'elsewhere', locked / LOCK)
    assert refusal(locked) == (f"`--out` {str(locked)!r}: {LOCK} is a symbolic link; the tool writes it itself: "
                               f"move it away")
    run = tmp_path / 'run'
    with OutputFolder(run) as folder:
        folder.write_text('metrics.json', '{}'); folder.commit(['metrics.json'])
    (run / 'export.pkl').mkdir()                                          # an output name that is not the run's file
    assert refusal(run) == f"`--out` {str(run)!r}: 'export.pkl' is not a file the earlier run wrote; move it away"
    (run / 'export.pkl').rmdir()
    assert check_out_folder(run) is None and check_out_folder(tmp_path / 'new' / 'deeper') is None


def test_name_length_limit_is_the_file_systems_exactly(tmp_path):
    from resnetx_cli.runs import check_name_lengths
    limit = os.pathconf(tmp_path, 'PC_NAME_MAX')
    assert check_name_lengths(tmp_path / ('a' * limit) / 'b', '--out') is None          # at the limit: fine
    long = 'é' * (limit // 2 + 1)                                                        # 2 bytes a letter: counted in bytes
    with pytest.raises(ValueError) as e: check_name_lengths(tmp_path / long / 'b', '--out')
    assert str(e.value) == (f"`--out` {str(tmp_path / long / 'b')!r}: the name {long[:20]!r}... is "
                            f"{2 * len(long)} bytes long, the file system allows {limit}")
    with pytest.raises(ValueError, match=f"`--data` .* allows {limit}"): check_name_lengths(tmp_path / ('b' * (limit + 1)), '--data')
    with pytest.raises(ValueError, match='the name'): check_name_lengths(Path('/' + 'c' * (limit + 1)) / 'd', '--out')


def test_odd_files_named_like_the_tools_own_are_told_apart(tmp_path):
    from resnetx_cli.runs import odd_marker, read_marker, MARKER_MAX_BYTES
    cases = {'link': 'is a symbolic link', 'dangling': 'is a symbolic link', 'dir': 'is a folder',
             'fifo': 'is not a regular file (a pipe, socket or device)', 'big': f'is {MARKER_MAX_BYTES + 1} bytes long, '
             f'more than a marker ({MARKER_MAX_BYTES})', 'file': None, 'none': None}
    for case, why in cases.items():
        d = tmp_path / case; d.mkdir()
        m = d / MARKER
        if case == 'link': (d / 'real').write_text('{}'); os.symlink(d / 'real', m)
        if case == 'dangling': os.symlink(d / 'nowhere', m)
        if case == 'dir': m.mkdir()
        if case == 'fifo': os.mkfifo(m)
        if case == 'big': m.write_text(' ' * (MARKER_MAX_BYTES - 2) + '{}' + ' ')
        if case == 'file': m.write_text(' ' * (MARKER_MAX_BYTES - 13) + '{"files": []}')   # exactly the cap: read whole
        assert odd_marker(d) == why, case
        assert read_marker(d) == ({'files': []} if case == 'file' else None), case


def test_out_folder_that_cannot_be_written_or_made_is_one_line(tmp_path, monkeypatch):
    import tempfile
    from resnetx_cli.runs import check_writable
    f = tmp_path / 'f'; f.write_text('x')
    with pytest.raises(ValueError) as e: check_writable(f / 'sub', '--out')
    assert str(e.value) == f"`--out` {str(f / 'sub')!r}: {str(f)!r} is a file, not a folder"
    with pytest.raises(ValueError) as e, OutputFolder(f / 'sub'): pass
    assert str(e.value) == f"`--out` {str(f / 'sub')!r} cannot be created: Not a directory"
    def refuse(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(tempfile, 'mkdtemp', refuse)                     # root ignores modes: refused by hand
    with pytest.raises(ValueError) as e: check_writable(tmp_path / 'new', '--out')
    assert str(e.value) == f"`--out` {str(tmp_path / 'new')!r} cannot be written: Permission denied ({tmp_path})"


def test_a_lock_that_is_not_a_file_or_keeps_changing_is_refused(tmp_path, monkeypatch):
    import stat
    out = tmp_path / 'out'; (out / LOCK).mkdir(parents=True)
    with pytest.raises(ValueError) as e, OutputFolder(out): pass
    assert str(e.value) == f"`--out` {str(out)!r}: {LOCK} cannot be written: Is a directory"
    (out / LOCK).rmdir()
    umask = os.umask(0o022); os.umask(umask)
    with OutputFolder(out) as folder:
        assert not folder.committed and folder.finished == []
        assert stat.S_IMODE(os.stat(out / LOCK).st_mode) == 0o644 & ~umask
    monkeypatch.setattr(os.path, 'samestat', lambda a, b: False)          # a new lock file each time it looks
    with pytest.raises(ValueError) as e, OutputFolder(out): pass
    assert str(e.value) == f"`--out` {str(out)!r}: its lock file keeps changing; is another run starting there?"


def test_a_folder_that_cannot_be_listed_is_no_run(tmp_path, monkeypatch):
    from resnetx_cli.runs import looks_like_run
    (tmp_path / 'export.pkl').write_bytes(b'x'); (tmp_path / 'metrics.json').write_text('{}')
    assert looks_like_run(tmp_path)
    def refuse(*a): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(os, 'scandir', refuse)
    assert not looks_like_run(tmp_path)


def test_out_folder_checks_name_the_out_argument(tmp_path, monkeypatch):
    "check_out_folder's name, listing and probe refusals all say `--out` and the folder (in-process, word for word)."
    import tempfile
    from resnetx_cli.runs import check_out_folder
    long = tmp_path / ('n' * 300)
    with pytest.raises(ValueError, match=r"^`--out` .*: the name 'nnnnnnnnnnnnnnnnnnnn'\.\.\. is 300 bytes long"):
        check_out_folder(long)
    out = tmp_path / 'out'; out.mkdir()
    for n in 'ab': (out / n).write_text(n)
    with pytest.raises(ValueError) as e: check_out_folder(out)
    assert str(e.value) == (f"`--out` {str(out)!r} holds files `resnetx train` did not write ('a', 'b'): choose a new "
                            f"or empty folder (only a folder it marked as a run folder is written into)")
    real_listdir, real_mkdtemp = os.listdir, tempfile.mkdtemp
    def unlistable(p): raise PermissionError(13, 'Permission denied') if Path(p) == out else real_listdir(p)
    monkeypatch.setattr(os, 'listdir', unlistable)
    with pytest.raises(ValueError) as e: check_out_folder(out)
    assert str(e.value) == f"`--out` {str(out)!r} cannot be read: Permission denied"
    monkeypatch.setattr(os, 'listdir', real_listdir)
    empty = tmp_path / 'empty'; empty.mkdir()
    def no_write_in(folder):   # this folder takes no new file, its parent does (root ignores modes: refused by hand)
        def mkdtemp(*a, dir=None, **k):
            if Path(dir) == folder: raise PermissionError(13, 'Permission denied')
            return real_mkdtemp(*a, dir=dir, **k)
        return mkdtemp
    monkeypatch.setattr(tempfile, 'mkdtemp', no_write_in(empty))
    with pytest.raises(ValueError) as e: check_out_folder(empty)        # the folder itself is probed, not its parent
    assert str(e.value) == f"`--out` {str(empty)!r} cannot be written: Permission denied ({empty})"


def test_the_name_limit_is_the_one_the_file_system_gives(tmp_path, monkeypatch):
    from resnetx_cli.runs import check_name_lengths
    real = os.pathconf
    monkeypatch.setattr(os, 'pathconf', lambda p, name: 100 if name == 'PC_NAME_MAX' else real(p, name))
    with pytest.raises(ValueError, match='is 150 bytes long, the file system allows 100'):
        check_name_lengths(tmp_path / ('x' * 150), '--out')
    assert check_name_lengths(tmp_path / ('x' * 100), '--out') is None


def test_a_held_lock_refuses_the_second_run_word_for_word(tmp_path):
    import fcntl
    out = tmp_path / 'out'; out.mkdir()
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    os.write(fd, b'4242'); fcntl.flock(fd, fcntl.LOCK_EX)                # another run holds it
    try:
        with pytest.raises(ValueError) as e, OutputFolder(out): pass
        assert str(e.value) == (f"`--out` {str(out)!r} is being written by another run (process 4242): wait for it or "
                                f"choose another folder")
    finally: os.close(fd)


def test_a_study_folder_left_mid_switch_is_finished_and_said(tmp_path):
    from fastai_resnetx.job.study import run_study
    out = tmp_path / 'study'; out.mkdir()
    (out / MARKER).write_text(json.dumps({'written_by': 'resnetx study', 'files': ['study.json'],
                                          'switching': {'pid': 7, 'files': ['study.json']}}))
    (out / '.study.json.tmp-7').write_text('{"new": 1}')
    said = []
    with pytest.raises(ValueError, match='holds no finished runs'): run_study(out, report_only=True, log=said.append)
    assert len(said) == 1 and said[0].startswith(f"note: an earlier run into {out} was killed") and '(study.json)' in said[0]
    assert json.loads((out / 'study.json').read_text()) == {'new': 1}
