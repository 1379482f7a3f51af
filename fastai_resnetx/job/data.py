"The built-in data set (scikit-learn's handwritten digits) and image folders, as fastai DataLoaders."
import math, os, random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, PILImage, PILImageBW, RandomSplitter,
                               IndexSplitter, Resize, aug_transforms, image_extensions, verify_images)
from fasttransform import Transform
from resnetx_cli.runs import looks_like_run   # the front door's rule: one rule for what is a run folder

from ..checks import check_int

__all__ = ['DigitImage', 'DigitLabel', 'open_image', 'FolderLabel', 'CsvLabel', 'FolderItems', 'read_folder',
           'read_csv_labels', 'find_images', 'display_name',
           'available_memory', 'digits_split_sizes', 'digits_dls', 'folder_dls', 'VALID_FOLDERS']

VALID_FOLDERS = ('valid', 'val', 'validation')


def available_memory(device=None) -> int:
    "Bytes free for tensors on `device` (CUDA: its free memory; else the machine's available RAM)."
    import torch
    if device is not None and torch.device(device).type == 'cuda': return torch.cuda.mem_get_info(device)[0]
    try:
        import psutil
        return psutil.virtual_memory().available
    except ImportError: return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


class DigitImage(Transform):
    "Item getter: the digit at index `i` as an 8-bit PIL image (scikit-learn stores 0..16); a file or image as opened."
    # typed: fastai's `test_dl` (and so an exported learner's `predict`) starts here for files and images too, which
    # are then opened as every export opens them (EXIF orientation applied)
    def __init__(self, images:np.ndarray, bw:bool=False):
        super().__init__()
        self.images, self.bw = images, bw
        self.input_types = (int, np.integer, Path, str, Image.Image)   # what `TfmdLists.infer_idx` reads

    def encodes(self, i:int|np.integer):   # pragma: no mutate block  (fastcore dispatches on the annotation)
        img = Image.fromarray(self.images[i])
        return PILImageBW(img) if self.bw else PILImage(img.convert('RGB'))

    def encodes(self, fn:Path|str|Image.Image):   # noqa: F811  # pragma: no mutate block
        img = open_image(fn)
        return PILImageBW(img.convert('L')) if self.bw else img


class DigitLabel:
    "Item getter: the class name ('0'..'9') of the digit at index `i`."
    def __init__(self, targets:np.ndarray): self.targets = targets
    def __call__(self, i): return str(int(self.targets[i]))


def _to_8bit(img:Image.Image) -> Image.Image:
    "16-bit (and 32-bit integer) gray images scaled to 8 bits; PIL's own convert would clip them to white."
    if img.mode.startswith('I;16') or (img.mode == 'I' and np.asarray(img).max() > 255):
        return Image.fromarray(np.round(np.asarray(img, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    return img


def _upright(img:Image.Image) -> Image.Image:
    "`img` turned as its EXIF orientation says (a phone photo's), so that it is seen upright."
    try: return ImageOps.exif_transpose(img)
    except Exception: return img                  # a broken EXIF block: the pixels as stored

def open_image(fn:Path|str|Image.Image) -> PILImage:   # the input types let `test_dl` start here for paths and images
    "An upright (EXIF orientation applied) RGB `PILImage` from an 8- or 16-bit image file or PIL image."
    # not `PILImage.create`: it would clip 16-bit values to white and leave phone photos on their side
    if isinstance(fn, Image.Image): return PILImage(_to_8bit(_upright(fn)).convert('RGB'))
    with Image.open(fn) as img:
        img.load()
        return PILImage(_to_8bit(_upright(img)).convert('RGB'))


def digits_split_sizes(n_items:int=None, valid_pct:float=0.2):
    "(training, validation) sizes of the digits split (`RandomSplitter`'s arithmetic)."
    n = 1797 if n_items is None else min(n_items, 1797)
    return n - int(valid_pct * n), int(valid_pct * n)


def digits_dls(size:int=32, bs:int=64, valid_pct:float=0.2, seed:int=42, augment:bool=True, bw:bool=False,
               n_items:int=None, num_workers:int=0, **kwargs):
    "DataLoaders of scikit-learn's 1797 real 8x8 handwritten digits (or the first `n_items`) at `size` px, fixed split."
    from sklearn.datasets import load_digits
    check_int('size', size, 1)
    check_int('bs', bs, 1)
    if not 0 < valid_pct < 1: raise ValueError(f"`valid_pct` must be in (0, 1), got {valid_pct!r}")
    digits = load_digits()
    n = len(digits.images) if n_items is None else min(n_items, len(digits.images))
    if n * size * size * 2 > available_memory():
        raise ValueError(f"`size` {size}: {n} digits at {size}x{size} px need {n * size * size / 2**30:.1f} GiB, "
                         f"more than half the {available_memory() / 2**30:.1f} GiB free here")
    images = np.round(digits.images[:n] * (255 / 16)).astype(np.uint8)
    # upscale once here (bilinear, as fastai's Resize would), not per item and epoch (a Resize per item triples the
    # time of an epoch's batches); `with_resize` adds the Resize an exported learner needs for images of any size
    images = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in images])
    batch_tfms = aug_transforms(do_flip=False, max_rotate=10., max_zoom=1.1, max_lighting=0., max_warp=0.,
                                p_affine=0.75) if augment else None
    dblock = DataBlock(blocks=(ImageBlock(PILImageBW if bw else PILImage), CategoryBlock),
                       get_x=DigitImage(images, bw), get_y=DigitLabel(digits.target),
                       splitter=RandomSplitter(valid_pct, seed=seed), batch_tfms=batch_tfms)
    return dblock.dataloaders(list(range(n)), bs=bs, num_workers=num_workers, **kwargs)


def with_resize(dls, size:int):
    "`dls` with a `Resize(size)` in each item pipeline without one, so images of any size are resized as in training."
    for dl in dls.loaders:
        if not any(isinstance(t, Resize) for t in dl.after_item.fs): dl.after_item.add(Resize(size))
    return dls


# ---- image folders ----

def _inside(path:str, folder:str) -> bool: return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def display_name(name:str) -> str:
    "A file name as text: non-UTF-8 bytes (Latin-1 `caf\\xe9`) as `\\xe9`; UTF-8 names read right under LC_ALL=C too."
    return os.fsencode(name).decode('utf-8', errors='backslashreplace')


def _unreadable(e:OSError):
    raise ValueError(f"folder {display_name(str(e.filename))!r} in `data` cannot be read: {e.strerror}")


def find_images(root:Path, seen:set, skip=(), outputs:set=None) -> list:
    "Image files under `root`, each real file once (`seen`: real paths so far); `outputs` collects the folders skipped."
    real_root, skip = os.path.realpath(root), {os.path.realpath(p) for p in skip}
    found, dirs_seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unreadable):
        real = os.path.realpath(dirpath)
        # not data: the run's own output folder, earlier runs' outputs, a folder reached twice (a loop outside the root)
        if real in dirs_seen or real in skip or looks_like_run(dirpath):
            if outputs is not None and real not in dirs_seen: outputs.add(dirpath)
            dirnames[:] = []
            continue
        dirs_seen.add(real)
        # hidden folders (a run's temporary outputs) and links to folders inside the root (a loop, or a second view
        # of images read anyway) are left out; links to folders elsewhere are followed
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith('.') and not (
            os.path.islink(os.path.join(dirpath, d))
            and _inside(os.path.realpath(os.path.join(dirpath, d)), real_root))]
        found += [Path(dirpath) / f for f in sorted(filenames) if os.path.splitext(f)[1].lower() in image_extensions]
    unique = []
    for path in sorted(found, key=os.path.islink):          # stable: files first, then links (to files not yet read)
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            unique.append(path)
    return unique


class FolderLabel:
    "Item getter: an image file's label, the name of its top-level folder under one of `roots` (as `display_name`)."
    def __init__(self, roots): self.roots = [Path(r) for r in roots]
    def __call__(self, path):
        for root in self.roots:
            if Path(path).is_relative_to(root): return display_name(Path(path).relative_to(root).parts[0])
        raise ValueError(f"{str(path)!r} is under none of the data folders {[str(r) for r in self.roots]}")


class CsvLabel:
    "Item getter: the label of an image file from a CSV's rows (`{path: label}`)."
    def __init__(self, labels:dict): self.labels = labels
    def __call__(self, path): return self.labels[str(path)]


@dataclass
class FolderItems:
    "The images of a data folder, their labels, which are held out for validation, and what the user should be told."
    files: list
    labels: list
    valid_idx: list
    roots: list
    notes: list = field(default_factory=list)
    get_y: object = None                    # None: `FolderLabel(roots)`
    @property
    def classes(self): return sorted(set(self.labels[i] for i in self.train_idx))
    @property
    def train_idx(self): return sorted(set(range(len(self.files))) - set(self.valid_idx))


def _what_is_in(folder:Path) -> str:
    "What a class folder without images holds, in a few words."
    names = [n for _, _, fs in os.walk(folder, onerror=_unreadable) for n in fs]
    if not names: return 'is empty'
    exts = sorted({os.path.splitext(n)[1].lower() or '(none)' for n in names})
    return (
        f"holds {len(names)} files but no images (extensions {', '.join(exts[:5])}; images are "
        f"{', '.join(sorted(e for e in image_extensions if e in ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.webp')))}"
        f", ...)")


def _class_images(folder:Path, seen:set, skip, notes:list) -> dict:
    "{class: image files} of `folder`'s class folders; loose images, and class folders without images, are refused."
    outputs = set()
    files = find_images(folder, seen, skip, outputs)
    if os.path.realpath(folder) not in {os.path.realpath(s) for s in skip} and looks_like_run(folder):
        raise ValueError(f"`data` {str(folder)!r} is a run folder of the `resnetx` command (its outputs), not data: "
                         f"give the folder of class folders")
    loose = [f for f in files if f.parent == folder]
    if loose:
        raise ValueError(f"{str(folder)!r} holds {len(loose)} images outside class folders "
                         f"(e.g. {display_name(loose[0].name)!r}): labels are the class folders, so put each class's "
                         f"images in {folder}/<class>/")
    by_class = {}
    for f in files: by_class.setdefault(f.relative_to(folder).parts[0], []).append(f)
    # every class folder becomes a class or the run is refused: one without images is not silently dropped (a folder
    # holding only run outputs, or this run's --out, is not a class folder)
    output_tops = {Path(o).relative_to(folder).parts[0] for o in outputs if Path(o) != folder}
    for d in sorted(os.listdir(folder)):
        p = folder / d
        if d.startswith('.') or d in by_class or not p.is_dir(): continue
        if d in output_tops:   # an earlier run's outputs (or this run's --out): not a class, and said so
            if os.path.realpath(p) not in {os.path.realpath(s) for s in skip}:
                notes.append(f"skipped folder {display_name(str(p))!r}: it holds a `resnetx` run's outputs, not images")
            continue
        if os.path.islink(p) and _inside(os.path.realpath(p), os.path.realpath(folder)): continue   # a second view
        raise ValueError(f"class folder {display_name(str(p))!r} {_what_is_in(p)}: every class folder must hold "
                         f"images; remove it or add its images")
    names = {}
    for c in by_class: names.setdefault(display_name(c), []).append(c)
    twice = [v for v in names.values() if len(v) > 1]
    if twice: raise ValueError(f"class folders {twice[0]!r} have the same name as text: rename one")
    return {display_name(c): fs for c, fs in by_class.items()}


def _random_holdout(by_class:dict, valid_pct:float, seed:int) -> tuple:
    "(train, valid) {class: files}: `valid_pct` of each class held out at random, at least one image left to train on."
    small = {c: len(fs) for c, fs in by_class.items() if len(fs) < 2}
    if small:
        c, n = next(iter(small.items()))
        raise ValueError(f"class {c!r} has {n} image: a random {valid_pct:.0%} of each class is held out for "
                         f"validation, so each class needs at least 2 images (or give train/ and valid/ folders)")
    rng, train, valid = random.Random(seed), {}, {}
    for c, fs in sorted(by_class.items()):
        fs = fs.copy()
        rng.shuffle(fs)
        k = min(math.ceil(valid_pct * len(fs)), len(fs) - 1)
        valid[c], train[c] = fs[:k], fs[k:]
    return train, valid


def _holdout_note(train:dict, valid:dict, seed:int) -> str:
    "The note a random hold-out gives: how many images, the real fraction (rounding per class makes it differ)."
    k, n = sum(map(len, valid.values())), sum(map(len, valid.values())) + sum(map(len, train.values()))
    return (f"no valid/ folder: {k} of {n} images ({k / n:.1%}) are held out for validation, at random from each class "
            f"(seed {seed})")


def _check_layout(root:Path):
    "Refuse, in one line, a layout whose labels are not class folders (images/ next to annotations/ or a CSV)."
    if not (root / 'images').is_dir(): return
    csvs = sorted(p.name for p in root.iterdir() if p.suffix.lower() in ('.csv', '.tsv') and p.is_file())
    others = ([f'annotations/'] if (root / 'annotations').is_dir() else []) + csvs
    if others:
        raise ValueError(f"`data` {str(root)!r} has images/ next to {', '.join(others)}: its labels are not class "
                         f"folders; give a CSV of labels with `--labels FILE.csv` (file and label columns) or "
                         f"arrange the images as <class>/ folders")


TRAIN_FOLDERS = ('train', 'training')


def _split_folders(root:Path, names:tuple) -> list:
    "The sub-folders of `root` named one of `names`, whatever their case (`Train/`, `VAL/`)."
    try: found = [d.name for d in os.scandir(root) if d.name.lower() in names and d.is_dir()]
    except OSError as e: _unreadable(e)
    return [root / n for n in sorted(found, key=lambda n: (names.index(n.lower()), n))]


def _train_folder(root:Path):
    found = _split_folders(root, TRAIN_FOLDERS)
    if len(found) > 1: raise ValueError(f"`data` {str(root)!r} has {' and '.join(f.name + '/' for f in found)}: "
                                        f"keep one training folder")
    return found[0] if found else None


def _valid_folder(root:Path):
    "The validation split's folder: valid/, val/ or validation/ (any case); test/ where none of those is there."
    found = _split_folders(root, VALID_FOLDERS) or _split_folders(root, ('test',))
    if len(found) > 1: raise ValueError(f"`data` {str(root)!r} has {' and '.join(f.name + '/' for f in found)}: "
                                        f"keep one validation folder")
    return found[0] if found else None


def read_folder(path, valid_pct:float=0.2, seed:int=42, skip=()) -> FolderItems:
    "A data folder's images and labels (train/ and valid/, val/, validation/ or test/, any case; or classes)."
    root, seen, notes = Path(path), set(), []
    if not root.is_dir(): raise ValueError(f"`data` folder {str(root)!r} does not exist")
    valid_dir, train_dir = _valid_folder(root), _train_folder(root)
    _check_layout(root)
    if train_dir is not None:
        roots, train = [train_dir], _class_images(train_dir, seen, skip, notes)
        valid = _class_images(valid_dir, seen, skip, notes) if valid_dir else None
        if valid is not None: roots.append(valid_dir)
    elif valid_dir is not None:
        raise ValueError(f"`data` {str(root)!r} has {valid_dir.name}/ but no train/ next to it: a split folder "
                         f"is not a class; give train/ and {valid_dir.name}/ of class folders, or class folders")
    else: roots, train, valid = [root], _class_images(root, seen, skip, notes), None
    n_train = sum(map(len, train.values()))
    if n_train == 0: raise ValueError(f"`data` folder {str(root)!r} holds no image files")
    if len(train) < 2: raise ValueError(f"`data` folder {str(roots[0])!r} needs at least 2 class folders, "
                                        f"found {sorted(train)}")
    if valid is None:
        train, valid = _random_holdout(train, valid_pct, seed)
        notes.append(_holdout_note(train, valid, seed))
    else:
        extra = sorted(set(valid) - set(train))
        if extra: raise ValueError(f"class {extra[0]!r} is in {valid_dir.name}/ but not in train/ "
                                   f"(train/ has {sorted(train)})")
        if not any(valid.values()): raise ValueError(f"{str(valid_dir)!r} holds no images")
    n_train = sum(map(len, train.values()))
    files = [f for c in sorted(train) for f in train[c]] + [f for c in sorted(valid) for f in valid[c]]
    labels = [c for c in sorted(train) for _ in train[c]] + [c for c in sorted(valid) for _ in valid[c]]
    return FolderItems(files, labels, list(range(n_train, len(files))), roots, notes)


def _csv_columns(df) -> tuple:
    "(file, label, is_valid or None) column indices: `is_valid` by its name, the file and label the first two others."
    names = [str(c).strip().lower() for c in df.columns]
    vi = names.index('is_valid') if 'is_valid' in names else None
    others = [i for i in range(len(names)) if i != vi]
    if len(others) < 2: raise ValueError(f"`--labels` needs a file column and a label column besides is_valid, "
                                         f"got the columns {list(df.columns)}")
    return others[0], others[1], vi


def _same_file_key(f:Path) -> tuple:
    "What makes two paths one file: its device and inode (a hard link too), else its resolved path."
    try:
        st = os.stat(f)
        return st.st_dev, st.st_ino
    except OSError: return (os.path.realpath(f),)


def read_csv_labels(path, labels, valid_pct:float=0.2, seed:int=42) -> FolderItems:
    "A data folder's images and labels from CSV (as fastai's `from_csv`: file and label columns, optional `is_valid`)."
    root, labels = Path(path), Path(labels)
    df = _read_labels_csv(labels)
    fi, li, vi = _csv_columns(df)
    by_class, valid_by_class, seen = {}, {}, {}
    for i, row in enumerate(df.itertuples(index=False), start=2):          # line 1 is the header
        fn, label = str(row[fi]).strip(), str(row[li]).strip()
        where = f"`--labels` {str(labels)!r} line {i}"
        if not fn or not label: raise ValueError(f"{where}: an empty file name or label")
        f = root / fn
        if not f.is_file(): raise ValueError(f"{where}: image {fn!r} is not in `data` {str(root)!r}")
        if f.suffix.lower() not in image_extensions: raise ValueError(f"{where}: {fn!r} is not an image file name")
        key = _same_file_key(f)   # `a.png`, its absolute path and `sub/../a.png` are one file
        if key in seen: raise ValueError(f"{where}: {fn!r} is the file of line {seen[key]} again: list each image once")
        seen[key] = i
        is_valid = vi is not None and str(row[vi]).strip().lower() in ('1', 'true', 'yes')
        (valid_by_class if is_valid else by_class).setdefault(label, []).append(f)
    train, valid, notes = _csv_split(by_class, valid_by_class, vi is not None, labels, valid_pct, seed)
    files = [f for c in sorted(train) for f in train[c]] + [f for c in sorted(valid) for f in valid[c]]
    ys = [c for c in sorted(train) for _ in train[c]] + [c for c in sorted(valid) for _ in valid[c]]
    n_train = sum(map(len, train.values()))
    return FolderItems(files, ys, list(range(n_train, len(files))), [root], notes,
                       get_y=CsvLabel({str(f): y for f, y in zip(files, ys)}))


def _read_labels_csv(labels:Path):
    "The `--labels` CSV as text columns, with at least two columns and one row, or one clear error."
    import pandas as pd
    try: df = pd.read_csv(labels, header='infer', dtype=str, keep_default_na=False)
    except Exception as e:
        raise ValueError(f"`--labels` {str(labels)!r} cannot be read as CSV: "
                         f"{str(e).strip().splitlines()[0]}") from None
    if df.shape[1] < 2 or len(df) == 0:
        raise ValueError(f"`--labels` {str(labels)!r} needs a file column and a label column and at least one row, "
                         f"got {df.shape[1]} column(s) and {len(df)} row(s)")
    return df


def _csv_split(by_class:dict, valid_by_class:dict, has_valid:bool, labels:Path, valid_pct:float, seed:int):
    "(train, valid, notes): the CSV's `is_valid` split checked, or a seeded random hold-out where it has none."
    if len(by_class) < 2:
        raise ValueError(f"`--labels` {str(labels)!r} gives {len(by_class)} training label(s) {sorted(by_class)}: "
                         f"at least 2 are needed")
    if not has_valid:
        train, valid = _random_holdout(by_class, valid_pct, seed)
        return train, valid, [_holdout_note(train, valid, seed).replace('no valid/ folder', 'no is_valid column')]
    extra = sorted(set(valid_by_class) - set(by_class))
    if extra:
        raise ValueError(f"label {extra[0]!r} has only is_valid rows in `--labels` {str(labels)!r}: "
                         f"nothing to train on")
    if not valid_by_class: raise ValueError(f"`--labels` {str(labels)!r}: no row has is_valid true")
    return by_class, valid_by_class, []


def _check_readable(files):
    bad = verify_images(files)
    if bad: raise ValueError(f"unreadable image {str(bad[0])!r} in `data` ({len(bad)} of {len(files)} files "
                             f"cannot be opened)")


def folder_dls(path, size:int=64, bs:int=32, valid_pct:float=0.2, seed:int=42, augment:bool=True, num_workers:int=0,
               items:FolderItems=None, **kwargs):
    "DataLoaders from an image folder (see `read_folder`; `items`: its result, when already read)."
    check_int('size', size, 1)
    check_int('bs', bs, 1)
    items = items or read_folder(path, valid_pct, seed)
    _check_readable(items.files)
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=items.classes)), get_x=open_image,
                       get_y=items.get_y or FolderLabel(items.roots), splitter=IndexSplitter(items.valid_idx),
                       item_tfms=Resize(size), batch_tfms=aug_transforms(size=size) if augment else None)
    return dblock.dataloaders(items.files, bs=bs, num_workers=num_workers, **kwargs)
