"""`resnetx train --labels`: a CSV read as fastai's `from_csv` reads it (file and label columns, optional `is_valid`).
Each refusal is checked to the word, with the file's path, and each accepted spelling by the split it gives."""
from pathlib import Path

import pytest

from fastai_resnetx.job.data import read_csv_labels
from digit_folders import write_class


@pytest.fixture
def data(tmp_path) -> Path:
    "images/ of 4 real 3s and 4 real 7s (PNG), and a notes.txt that is no image."
    root = tmp_path / 'data'
    write_class(root / 'images', 3, 4); write_class(root / 'images', 7, 4)
    (root / 'notes.txt').write_text('not an image')
    return root


def rows(*lines) -> str: return '\n'.join(lines) + '\n'


ALL = [f'images/{d}_{i}.png' for d in (3, 7) for i in range(4)]


def refusal(data:Path, text:str, **kw) -> str:
    (data / 'l.csv').write_bytes(text.encode())
    with pytest.raises(ValueError) as e: read_csv_labels(data, data / 'l.csv', **kw)
    return str(e.value).replace(str(data / 'l.csv'), 'CSV').replace(str(data), 'DATA')


def test_csv_refusals_in_their_words(data):
    assert refusal(data, '') == "`--labels` 'CSV' cannot be read as CSV: No columns to parse from file"
    assert refusal(data, rows('file', 'images/3_0.png')) == (
        "`--labels` 'CSV' needs a file column and a label column and at least one row, got 1 column(s) and 1 row(s)")
    assert refusal(data, rows('file,label')) == (
        "`--labels` 'CSV' needs a file column and a label column and at least one row, got 2 column(s) and 0 row(s)")
    assert refusal(data, rows('is_valid,file', 'true,images/3_0.png')) == (
        "`--labels` needs a file column and a label column besides is_valid, got the columns ['is_valid', 'file']")
    assert refusal(data, rows('file,label', 'images/3_0.png,')) == "`--labels` 'CSV' line 2: an empty file name or label"
    assert refusal(data, rows('file,label', 'images/3_0.png,3', ',7')) == (
        "`--labels` 'CSV' line 3: an empty file name or label")
    assert refusal(data, rows('file,label', 'nope.png,3')) == "`--labels` 'CSV' line 2: image 'nope.png' is not in `data` 'DATA'"
    assert refusal(data, rows('file,label', 'notes.txt,3')) == "`--labels` 'CSV' line 2: 'notes.txt' is not an image file name"
    assert refusal(data, rows('file,label', *(f'{f},three' for f in ALL[:4]))) == (
        "`--labels` 'CSV' gives 1 training label(s) ['three']: at least 2 are needed")


def test_is_valid_refusals_in_their_words(data):
    lines = ['file,label,is_valid'] + [f"{f},{f[7]},{'true' if f.endswith('_0.png') else 'false'}" for f in ALL]
    lines[4] = lines[4].replace(',3,true', ',8,true').replace(',3,false', ',8,true')     # 3_3: an 8, valid only
    lines[8] = lines[8].replace(',7,false', ',9,true')                                     # 7_3: a 9, valid only
    assert refusal(data, rows(*lines)) == "label '8' has only is_valid rows in `--labels` 'CSV': nothing to train on"
    assert refusal(data, rows('file,label,is_valid', *(f'{f},{f[7]},no' for f in ALL))) == (
        "`--labels` 'CSV': no row has is_valid true")


def test_is_valid_spellings(data):
    "1, true and yes (any case, spaces around) are valid; anything else trains."
    marks = ['1', '0', ' TRUE ', 'False', 'Yes', 'y', 'true', '']          # for 3_0 .. 3_3, 7_0 .. 7_3
    (data / 'l.csv').write_text(rows('file,label,is_valid', *(f'{f},{f[7]},{m}' for f, m in zip(ALL, marks))))
    items = read_csv_labels(data, data / 'l.csv')
    valid = sorted(items.files[i].name for i in items.valid_idx)
    assert valid == ['3_0.png', '3_2.png', '7_0.png', '7_2.png'] and items.notes == [] and items.roots == [data]


def test_labels_are_text_as_written(data):
    "Labels stay the CSV's text: '01' and '1' are two classes, 'NA' and 'None' are labels (not missing values)."
    labels = ['01', '1', 'NA', 'None']
    (data / 'l.csv').write_text(rows('file,label', *(f'{f},{labels[i % 4]}' for i, f in enumerate(ALL))))
    items = read_csv_labels(data, data / 'l.csv', valid_pct=0.4)
    assert items.classes == ['01', '1', 'NA', 'None']
    assert all(items.get_y(f) == labels[ALL.index(f'images/{f.name}') % 4] for f in items.files)


def test_random_hold_out_uses_the_seed(data):
    (data / 'l.csv').write_text(rows('file,label', *(f'{f},{f[7]}' for f in ALL)))
    split = lambda seed: sorted(f.name for f in (lambda it: [it.files[i] for i in it.valid_idx])(
        read_csv_labels(data, data / 'l.csv', valid_pct=0.5, seed=seed)))
    assert len({tuple(split(1)) for _ in range(4)}) == 1                     # the same seed, the same split
    assert len({tuple(split(s)) for s in range(1, 6)}) > 1                      # (each of 36 splits equally likely)
    assert read_csv_labels(data, data / 'l.csv', seed=7).notes == [
        'no is_valid column: 2 of 8 images (25.0%) are held out for validation, at random from each class (seed 7)']


def test_numeric_labels_stay_text(data):
    "A label column of numbers only is still text: '01' and '1', '007' and '7' are four classes, as written."
    labels = ['01', '1', '007', '7']
    (data / 'l.csv').write_text(rows('file,label', *(f'{f},{labels[i % 4]}' for i, f in enumerate(ALL))))
    assert read_csv_labels(data, data / 'l.csv', valid_pct=0.4).classes == ['007', '01', '1', '7']
