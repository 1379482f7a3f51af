"Reading an image folder for `resnetx train --data`: labels, layouts, duplicates, loops, outputs that are not data, refusals."
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnetx_cli import main
from fastai_resnetx.job.data import read_folder, open_image
from digit_folders import digit_folder, write_class, digit_images, error_lines


def labels_of(items): return sorted(set(items.labels))


def test_labels_are_the_top_level_class_folders(tmp_path):
    write_class(tmp_path / '3' / '2019', 3, 5); write_class(tmp_path / '3' / '2020', 3, 5, start=5)
    write_class(tmp_path / '7' / '2020', 7, 10)
    items = read_folder(tmp_path)
    assert labels_of(items) == ['3', '7'] and len(items.files) == 20
    assert all(Path(f).relative_to(tmp_path).parts[0] == l for f, l in zip(items.files, items.labels))


@pytest.mark.parametrize('valid_name', ['valid', 'val', 'validation'])
def test_validation_folder_by_any_usual_name(tmp_path, valid_name):
    items = read_folder(digit_folder(tmp_path, valid_name=valid_name))
    assert [len(items.files) - len(items.valid_idx), len(items.valid_idx)] == [18, 6] and items.notes == []
    assert all(valid_name in Path(items.files[i]).parts for i in items.valid_idx)


def test_random_holdout_is_said_with_its_seed_and_keeps_every_class(tmp_path):
    items = read_folder(digit_folder(tmp_path, layout='flat', n=10))
    assert items.notes == ['no valid/ folder: 4 of 20 images (20.0%) are held out for validation, at random from each class (seed 42)']
    valid = [items.labels[i] for i in items.valid_idx]
    assert sorted(valid) == ['3', '3', '7', '7'] and items.classes == ['3', '7']
    assert read_folder(tmp_path).valid_idx == items.valid_idx                 # the same split every time


def test_holdout_note_gives_the_real_fraction(tmp_path):
    "6 images per class: 20% rounds up to 2 of 6 per class, 4 of 12 in all (1/3, not the 20% asked for)."
    items = read_folder(digit_folder(tmp_path, layout='flat', n=6))
    assert len(items.valid_idx) == 4 and len(items.files) == 12
    assert items.notes == ['no valid/ folder: 4 of 12 images (33.3%) are held out for validation, at random from each class (seed 42)']


def test_files_read_once_and_symlink_loops_not_followed(tmp_path):
    data = digit_folder(tmp_path / 'data', layout='flat', n=10)
    os.symlink(data, data / '3' / 'loop')                                     # data/3/loop/3/loop/... forever
    os.symlink(data / '7', data / '3' / 'sevens_again')                       # the same files under another class
    os.symlink(data / '7' / '7_0.png', data / '7' / 'link_to_7_0.png')        # the same file twice in one class
    os.symlink(write_class(tmp_path / 'more', 3, 2, start=10)[0].parent, data / '3' / 'more')  # images kept elsewhere
    items = read_folder(data)
    assert len(items.files) == 22 and len({os.path.realpath(f) for f in items.files}) == 22
    assert items.labels.count('3') == 12 and items.labels.count('7') == 10


def test_outputs_and_earlier_runs_are_never_data(tmp_path):
    data = digit_folder(tmp_path, layout='flat', n=10)
    run = data / 'runs' / 'old'                             # an unmarked earlier run's four outputs, inside the data
    old_run(run)
    write_class(data / 'out', 2, 3)                                           # this run's --out folder
    write_class(data / '.out.tmp-123', 4, 3)                                  # a hidden (temporary) folder
    items = read_folder(data, skip=[data / 'out'])
    assert labels_of(items) == ['3', '7'] and len(items.files) == 20
    assert items.notes[:1] == [f"skipped folder {str(data / 'runs')!r}: it holds a `resnetx` run's outputs, not images"]
    assert not any(repr(str(data / 'out')) in n for n in items.notes)        # this run's own --out goes unsaid


def old_run(folder:Path):
    "What `resnetx train` wrote before it marked its folders: its four outputs and nothing else."
    folder.mkdir(parents=True)
    for name in ('loss.png', 'confusion_matrix.png'): digit_images(1, 1)[0].save(folder / name)
    (folder / 'export.pkl').write_bytes(b'x'); (folder / 'metrics.json').write_text('{}')


def test_a_class_folder_holding_an_export_and_metrics_is_still_a_class(tmp_path):
    "Only the marker (or an older run's outputs alone) makes a folder a run: a class with these files is data."
    data = digit_folder(tmp_path, layout='flat', n=6)
    write_class(data / 'shirts', 1, 6)
    for folder in (data / 'shirts', data):                                    # in a class folder, and in the root
        (folder / 'export.pkl').write_bytes(b'my learner'); (folder / 'metrics.json').write_text('{"mine": 1}')
    items = read_folder(data)
    assert labels_of(items) == ['3', '7', 'shirts'] and items.labels.count('shirts') == 6
    from resnetx_cli.runs import OutputFolder
    marked = data / 'marked'
    with OutputFolder(marked, 'resnetx train') as out:                      # a marked run folder is never data
        digit_images(2, 1)[0].save(out.temp('loss.png'), format='png')
        out.temp('metrics.json').write_text('{}')
        out.commit(['loss.png', 'metrics.json'])
    items = read_folder(data)
    assert labels_of(items) == ['3', '7', 'shirts'] and any(repr(str(marked)) in n for n in items.notes)
    with pytest.raises(ValueError, match=r"is a run folder of the `resnetx` command \(its outputs\), not data"):
        read_folder(marked)


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    img8 = np.asarray(digit_images(3, 1)[0])
    Image.fromarray(img8.astype(np.uint16) * 257).save(tmp_path / 'deep.png')            # 16-bit gray PNG
    assert Image.open(tmp_path / 'deep.png').mode.startswith('I')
    opened = np.asarray(open_image(tmp_path / 'deep.png'))
    assert opened.shape == (16, 16, 3) and np.array_equal(opened[..., 0], img8)           # not all white


def refusal(capsys, tmp_path, data) -> str:
    "The one stderr line (exit code 2) of `resnetx train --data data`; nothing written."
    out = tmp_path / 'out'
    code = main(['train', '--data', str(data), '--out', str(out), '--epochs', '1', '--size', '16'])
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and not out.exists(), (code, err)
    return err[0]


def test_flat_train_folder_refused(tmp_path, capsys):
    write_class(tmp_path / 'data' / 'train', 3, 6); write_class(tmp_path / 'data' / 'valid' / '3', 3, 2, start=6)
    assert "holds 6 images outside class folders (e.g. '3_0.png'): labels are the class folders" in refusal(capsys, tmp_path, tmp_path / 'data')


def test_valid_class_missing_in_train_refused(tmp_path, capsys):
    data = digit_folder(tmp_path / 'data', valid_name='val')
    write_class(data / 'val' / '5', 5, 2)
    assert "class '5' is in val/ but not in train/ (train/ has ['3', '7'])" in refusal(capsys, tmp_path, data)


def test_class_too_small_for_the_split_refused(tmp_path, capsys):
    data = digit_folder(tmp_path / 'data', layout='flat')
    write_class(data / '5', 5, 1)
    assert ("class '5' has 1 image: a random 20% of each class is held out for validation, so each class needs at "
            "least 2 images") in refusal(capsys, tmp_path, data)


@pytest.mark.parametrize('make, words', [
    (lambda d: digit_folder(d, layout='flat', classes=('3',)), 'needs at least 2 class folders'),
    (lambda d: d.mkdir(), 'holds no image files'),
    (lambda d: (digit_folder(d, layout='flat'), (d / '3' / 'broken.png').write_bytes(b'not a png')), 'unreadable image'),
    (lambda d: (digit_folder(d, layout='flat'), write_class(d, 4, 1)), 'holds 1 images outside class folders'),
    (lambda d: write_class(d / 'val' / '3', 3, 2), 'has val/ but no train/ next to it'),
    (lambda d: (digit_folder(d), digit_folder(d, valid_name='val')), 'has valid/ and val/: keep one validation folder'),
])
def test_other_folder_refusals(tmp_path, capsys, make, words):
    make(tmp_path / 'data')
    assert words in refusal(capsys, tmp_path, tmp_path / 'data')


@pytest.mark.parametrize('train, valid', [('Train', 'Valid'), ('TRAIN', 'VAL'), ('train', 'Validation'),
                                          ('training', 'test')])
def test_split_folders_whatever_their_case(tmp_path, train, valid):
    for split, n in ((train, 3), (valid, 2)):
        for c in ('cat', 'dog'):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n): Image.new('RGB', (8, 8), (i, 0, 0)).save(tmp_path / split / c / f'{i}.png')
    items = read_folder(tmp_path)
    assert sorted(set(items.labels)) == ['cat', 'dog']                 # not the classes 'Train' and 'Valid'
    assert len(items.valid_idx) == 4 and len(items.files) == 10
    assert all(Path(items.files[i]).parts[-3] == valid for i in items.valid_idx)


def test_a_validation_folder_without_a_training_folder_is_refused(tmp_path):
    for split in ('VAL', 'cat'):
        (tmp_path / split).mkdir()
        Image.new('RGB', (8, 8)).save(tmp_path / split / '0.png')
    with pytest.raises(ValueError, match=r"has VAL/ but no train/ next to it: a split folder is not a class"):
        read_folder(tmp_path)
