"`resnetx study` and `resnetx train --data fashion-mnist` through the front door: arguments, folders, what is refused."
import json, os

import pytest

from resnetx_cli import main
from resnetx_cli.runs import MARKER
from digit_folders import error_lines
from test_idx_data import write_idx_set


@pytest.mark.parametrize('argv, words', [
    (['study'], "give `--out DIR` (run or resume a study) or `--report DIR` (report its finished runs)"),
    (['study', '--out', 'a', '--report', 'b'], "give `--out DIR` (run or resume a study) or `--report DIR`"),
    (['study', '--data', 'no/such/folder', '--out', 'x'],
     "`--data` must be 'fashion-mnist' or a folder of idx files, got 'no/such/folder'"),
    (['study', '--folds', '1,x', '--out', 'x'], "argument --folds: must be comma-separated integers in [1, 64], got '1,x'"),
    (['study', '--report', 'no-study-here'], "`--report` 'no-study-here' is not a study folder"),
    (['train', '--data', 'fashion-mnist', '--labels', 'l.csv'], "`--labels` is for image folders, not for 'fashion-mnist'"),
])
def test_front_door_errors(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try: code = main(argv)
    except SystemExit as e: code = e.code          # argparse's own errors exit from inside
    assert code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and words in err[0]


def test_an_idx_folder_keeps_its_own_size(tmp_path, capsys):
    write_idx_set(tmp_path / 'data', size=(10, 10))
    assert main(['train', '--data', str(tmp_path / 'data'), '--size', '32', '--out', str(tmp_path / 'o')]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "resnetx train: error: `size` 32: an idx data set is used at its own size, 10 px"]
    assert not (tmp_path / 'o').exists()


def test_study_and_train_folders_are_not_each_others(tmp_path, capsys):
    write_idx_set(tmp_path / 'data', n_train=32, n_test=16, size=(8, 8))
    study = tmp_path / 'study'
    assert main(['study', '--data', str(tmp_path / 'data'), '--folds', '1', '--seeds', '1', '--epochs', '1', '--bs',
                 '8', '--no-flip', '--out', str(study)]) == 0
    out = capsys.readouterr().out
    assert '| fold1 | 1 |' in out and 'report: ' in out
    assert json.loads((study / MARKER).read_text())['written_by'] == 'resnetx study'
    assert sorted(os.listdir(study)) == sorted([MARKER, 'report.md', 'results.jsonl', 'study.json', 'study.png'])
    before = {n: (study / n).read_bytes() for n in os.listdir(study)}
    assert main(['train', '--out', str(study)]) == 2       # a study folder is not a train run folder
    assert "holds files `resnetx train` did not write" in capsys.readouterr().err
    assert {n: (study / n).read_bytes() for n in os.listdir(study)} == before
    (study / 'notes.md').write_text('mine')                  # the user's file in a study folder is kept
    assert main(['study', '--report', str(study)]) == 0
    assert (study / 'notes.md').read_text() == 'mine' and '| fold1 | 1 |' in (study / 'report.md').read_text()
