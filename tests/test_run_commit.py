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
