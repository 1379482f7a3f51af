"""`read_folder` and `folder_dls` on the folders users have: each refusal to the word with the path it names, links
that are a second view of the same images, a sub-folder that cannot be listed, and the documented defaults."""
import errno, os
from pathlib import Path

import numpy as np, pytest
from fastai.vision.all import RandomSplitter

from fastai_resnetx.job.data import DigitImage, FolderLabel, digits_dls, digits_split_sizes, folder_dls, read_folder
from digit_folders import digit_folder, write_class


def refused(path, **kw) -> str:
    with pytest.raises(ValueError) as e: read_folder(path, **kw)
    return str(e.value)


_SCANDIR = os.scandir


def unlistable(monkeypatch, folder:Path) -> str:
    "`folder` cannot be listed from now on, as without permission (the tests run as root, which reads any folder)."
    def scan(path='.'):
        if Path(path) == folder: raise PermissionError(errno.EACCES, 'Permission denied', str(path))
        return _SCANDIR(path)
    monkeypatch.setattr(os, 'scandir', scan)
    return f"folder '{folder}' in `data` cannot be read: Permission denied"


def test_folder_refusals_in_their_words(tmp_path):
    r = tmp_path
    assert refused(r / 'none') == f"`data` folder '{r}/none' does not exist"
    (r / 'only_valid' / 'valid' / '3').mkdir(parents=True)
    assert refused(r / 'only_valid') == (
        f"`data` '{r}/only_valid' has valid/ but no train/ next to it: a split folder is not a class; give train/ and "
        f"valid/ of class folders, or class folders")
    (r / 'empty').mkdir()
    assert refused(r / 'empty') == f"`data` folder '{r}/empty' holds no image files"
    write_class(r / 'one' / 'train' / '3', 3, 4)
    assert refused(r / 'one') == f"`data` folder '{r}/one/train' needs at least 2 class folders, found ['3']"
    d = digit_folder(r / 'nov', n=8)
    for c in ('3', '7'):
        for f in (d / 'valid' / c).iterdir(): f.unlink()
        (d / 'valid' / c).rmdir()
    assert refused(d) == f"'{d}/valid' holds no images"
    write_class(r / 'loose', 3, 2)
    assert refused(r / 'loose').startswith(f"'{r}/loose' holds 2 images outside class folders (e.g. '3_0.png')")


def test_two_training_or_validation_folders_refused(tmp_path):
    d = digit_folder(tmp_path / 'd', n=8)
    (d / 'Train').mkdir()
    assert refused(d) == f"`data` '{d}' has Train/ and train/: keep one training folder"
    (d / 'Train').rmdir()
    (d / 'val').mkdir()
    assert refused(d) == f"`data` '{d}' has valid/ and val/: keep one validation folder"
    (d / 'val').rmdir()
    assert len(read_folder(d).files) == 16


def test_an_unreadable_image_is_named(tmp_path):
    d = digit_folder(tmp_path / 'd', n=8)
    (d / 'train' / '3' / 'bad.png').write_bytes(b'not a png')
    with pytest.raises(ValueError) as e: folder_dls(d, size=16)
    assert str(e.value) == f"unreadable image '{d}/train/3/bad.png' in `data` (1 of 17 files cannot be opened)"


def test_a_sub_folder_that_cannot_be_listed_is_refused(tmp_path, monkeypatch):
    "A class folder with images and a sub-folder that cannot be read: refused, not read without it (as root: simulated)."
    d = digit_folder(tmp_path / 'd', n=8)
    write_class(d / 'train' / '3' / 'more', 3, 2, start=20)
    words = unlistable(monkeypatch, d / 'train' / '3' / 'more')
    assert refused(d) == words
    words = unlistable(monkeypatch, d)
    assert refused(d) == words


def test_links_that_are_a_second_view_are_no_classes(tmp_path):
    "train/three -> train/3 and train/seven -> train/7 are the same images again: not classes; a folder after them is."
    d = digit_folder(tmp_path / 'd', n=8)
    os.symlink(d / 'train' / '3', d / 'train' / 'three'); os.symlink(d / 'train' / '7', d / 'train' / 'seven')
    items = read_folder(d)
    assert items.classes == ['3', '7'] and len(items.files) == 16
    (d / 'train' / 'zz').mkdir()
    assert refused(d) == (f"class folder '{d}/train/zz' is empty: every class folder must hold images; remove it or "
                          f"add its images")
    (d / 'train' / 'zz').rmdir()
    elsewhere = tmp_path / 'elsewhere'
    (elsewhere / 'x').mkdir(parents=True)
    (elsewhere / 'x' / 'a.txt').write_text('x')
    os.symlink(elsewhere, d / 'train' / 'other')                                # no second view: a class without images
    assert refused(d) == (f"class folder '{d}/train/other' holds 1 files but no images (extensions .txt; images are "
                          f".bmp, .jpeg, .jpg, .png, .tif, .webp, ...): every class folder must hold images; remove it "
                          f"or add its images")


def test_skipped_folders_are_no_classes(tmp_path):
    d = digit_folder(tmp_path / 'd', n=8, layout='flat')
    (d / 'aa').mkdir(); (d / 'zz').mkdir()
    assert refused(d, skip=[d / 'aa']) == (f"class folder '{d}/zz' is empty: every class folder must hold images; "
                                           f"remove it or add its images")
    assert read_folder(d, skip=[d / 'aa', d / 'zz']).classes == ['3', '7']


def test_folder_label_outside_every_root():
    with pytest.raises(ValueError) as e: FolderLabel(['/data/train', '/data/valid'])('/else/3/a.png')
    assert str(e.value) == "'/else/3/a.png' is under none of the data folders ['/data/train', '/data/valid']"
    assert FolderLabel(['/data/train', '/data/valid'])('/data/valid/7/x/a.png') == '7'


def test_the_documented_defaults(tmp_path):
    "folder_dls: 64 px, batches of 32, 20% held out with seed 42; digits_dls: 32 px, RGB, fastai's RandomSplitter."
    d = digit_folder(tmp_path / 'd', n=20, layout='flat')
    dls = folder_dls(d)
    want = read_folder(d, valid_pct=0.2, seed=42)
    assert list(dls.valid_ds.items) == [want.files[i] for i in want.valid_idx] and len(dls.valid_ds) == 8
    assert dls.one_batch()[0].shape == (32, 3, 64, 64)
    assert digits_split_sizes() == (1438, 359) and digits_split_sizes(100) == (80, 20)          # 1797 x 0.2 = 359.4
    dls = digits_dls(augment=False)
    assert list(dls.valid.items) == list(RandomSplitter(0.2, seed=42)(range(1797))[1])
    assert dls.one_batch()[0].shape == (64, 3, 32, 32)
    img = DigitImage(np.zeros((1, 8, 8), np.uint8))(0)
    assert img.mode == 'RGB' and DigitImage(np.zeros((1, 8, 8), np.uint8), bw=True)(0).mode == 'L'


def test_two_class_folders_with_one_name_as_text_refused(tmp_path):
    "A Latin-1 `caf\\xe9` (byte 0xe9) and a folder literally named `caf\\xe9` read as one text name: refused."
    d = digit_folder(tmp_path / 'd', n=8, layout='flat')
    latin1, literal = os.fsdecode(b'caf\xe9'), 'caf\\xe9'
    for name in (latin1, literal): write_class(d / name, 3, 2, start=30)
    message = refused(d)
    assert message == f"class folders {sorted([latin1, literal], key=lambda n: os.fsencode(n))!r} have the same name as text: rename one"


def test_train_folder_alone_and_earlier_runs_inside_the_split_folders(tmp_path):
    "train/ without valid/: 20% of each class held out (seed 42); a run's outputs inside train/ or valid/ are said."
    from test_folders import old_run
    d = tmp_path / 'd'
    write_class(d / 'train' / '3', 3, 5); write_class(d / 'train' / '7', 7, 5)
    old_run(d / 'train' / 'runs')
    items = read_folder(d)
    assert items.notes == [
        f"skipped folder '{d}/train/runs': it holds a `resnetx` run's outputs, not images",
        'no valid/ folder: 2 of 10 images (20.0%) are held out for validation, at random from each class (seed 42)']
    write_class(d / 'valid' / '3', 3, 1, start=9); write_class(d / 'valid' / '7', 7, 1, start=9)
    old_run(d / 'valid' / 'old')
    items = read_folder(d)
    assert items.notes == [f"skipped folder '{d}/{f}': it holds a `resnetx` run's outputs, not images"
                           for f in ('train/runs', 'valid/old')]
    assert items.roots == [d / 'train', d / 'valid'] and len(items.valid_idx) == 2


def test_what_a_class_folder_without_images_holds(tmp_path, monkeypatch):
    "Up to 5 of its extensions, sorted; a sub-folder that cannot be listed is said, not taken for empty."
    d = digit_folder(tmp_path / 'd', n=8, layout='flat')
    (d / 'docs' / 'x').mkdir(parents=True)
    for ext in ('.f', '.E', '.d', '.c', '.b', '.a', ''): (d / 'docs' / 'x' / f'n{ext}').write_text('x')
    assert refused(d) == (f"class folder '{d}/docs' holds 7 files but no images (extensions (none), .a, .b, .c, .d; "
                          f"images are .bmp, .jpeg, .jpg, .png, .tif, .webp, ...): every class folder must hold "
                          f"images; remove it or add its images")
    words = unlistable(monkeypatch, d / 'docs' / 'x')
    assert refused(d) == words
    (d / 'docs' / '.cache').mkdir()                    # hidden: no images are looked for there, but its files are told
    words = unlistable(monkeypatch, d / 'docs' / '.cache')
    assert refused(d) == words


def test_images_next_to_a_csv_or_tsv_refused_and_other_files_not_named(tmp_path):
    d = tmp_path / 'pets'
    write_class(d / 'images', 3, 2)
    (d / 'README.txt').write_text('x'); (d / 'labels.TSV').write_text('file\tlabel\n'); (d / 'b.csv').write_text('')
    assert refused(d) == (f"`data` '{d}' has images/ next to b.csv, labels.TSV: its labels are not class folders; give "
                          f"a CSV of labels with `--labels FILE.csv` (file and label columns) or arrange the images "
                          f"as <class>/ folders")
    for f in ('labels.TSV', 'b.csv'): (d / f).unlink()
    assert refused(d) == f"`data` folder '{d}' needs at least 2 class folders, found ['images']"   # no CSV: classes


def test_a_link_loop_outside_the_data_is_walked_once(tmp_path):
    "3/ext -> a folder outside the data that links to itself: its images are read once, the loop is not followed."
    d = digit_folder(tmp_path / 'd', n=8, layout='flat')
    outside = tmp_path / 'outside'
    write_class(outside, 3, 2, start=20)
    os.symlink(outside, outside / 'again'); os.symlink(outside, d / '3' / 'ext')
    items = read_folder(d)
    assert len(items.files) == 18 and sorted(f.name for f in items.files if 'ext' in f.parts) == ['3_20.png', '3_21.png']


def test_a_file_and_a_link_to_it_the_file_is_kept(tmp_path):
    "A link named to sort first (0_link.png -> 7_0.png): one item, under the file's own path."
    d = digit_folder(tmp_path / 'd', n=8, layout='flat')
    os.symlink(d / '7' / '7_0.png', d / '7' / '0_link.png')
    names = [f.name for f in read_folder(d).files]
    assert '7_0.png' in names and '0_link.png' not in names and len(names) == 16


def test_a_run_folder_given_as_data_refused(tmp_path):
    from test_folders import old_run
    run = tmp_path / 'runs' / 'latest'
    old_run(run)
    assert refused(run) == (f"`data` '{run}' is a run folder of the `resnetx` command (its outputs), not data: give "
                            f"the folder of class folders")
