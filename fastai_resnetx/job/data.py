"The built-in data set (scikit-learn's handwritten digits) and image folders, as fastai DataLoaders."
import math, os, random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, PILImage, PILImageBW, RandomSplitter, IndexSplitter,
                               Resize, aug_transforms, image_extensions, verify_images)
from resnetx_cli.runs import is_run_folder   # the front door's rule: one rule for what is a run folder

from ..checks import check_int

__all__ = ['DigitImage', 'DigitLabel', 'open_image', 'FolderLabel', 'FolderItems', 'read_folder', 'find_images',
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


class DigitImage:
    "Item getter: the digit at index `i` as an 8-bit PIL image (scikit-learn stores 0..16)."
    def __init__(self, images:np.ndarray, bw:bool=False): self.images, self.bw = images, bw
    def __call__(self, i):
        img = Image.fromarray(self.images[i])
        return PILImageBW(img) if self.bw else PILImage(img.convert('RGB'))


class DigitLabel:
    "Item getter: the class name ('0'..'9') of the digit at index `i`."
    def __init__(self, targets:np.ndarray): self.targets = targets
    def __call__(self, i): return str(int(self.targets[i]))


def _to_8bit(img:Image.Image) -> Image.Image:
    "16-bit (and 32-bit integer) gray images scaled to 8 bits; PIL's own convert would clip them to white."
    if img.mode.startswith('I;16') or (img.mode == 'I' and np.asarray(img).max() > 255):
        return Image.fromarray(np.round(np.asarray(img, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    return img


def open_image(fn:Path|str|Image.Image) -> PILImage:   # the input types let `test_dl` start here for paths and images
    "An RGB `PILImage` from an 8- or 16-bit image file or PIL image (`PILImage.create` would clip 16-bit values to white)."
    if isinstance(fn, Image.Image): return PILImage(_to_8bit(fn).convert('RGB'))
    with Image.open(fn) as img:
        img.load()
        return PILImage(_to_8bit(img).convert('RGB'))


def digits_split_sizes(n_items:int=None, valid_pct:float=0.2):
    "(training, validation) sizes of the digits split (`RandomSplitter`'s arithmetic)."
    n = 1797 if n_items is None else min(n_items, 1797)
    return n - int(valid_pct * n), int(valid_pct * n)


def digits_dls(size:int=32, bs:int=64, valid_pct:float=0.2, seed:int=42, augment:bool=True, bw:bool=False,
               n_items:int=None, num_workers:int=0, **kwargs):
    "DataLoaders of scikit-learn's 1797 real 8x8 handwritten digits (or the first `n_items`), upscaled to `size`, fixed split."
    from sklearn.datasets import load_digits
    check_int('size', size, 1); check_int('bs', bs, 1)
    if not 0 < valid_pct < 1: raise ValueError(f"`valid_pct` must be in (0, 1), got {valid_pct!r}")
    digits = load_digits()
    n = len(digits.images) if n_items is None else min(n_items, len(digits.images))
    if n * size * size * 2 > available_memory():
        raise ValueError(f"`size` {size}: {n} digits at {size}x{size} px need {n * size * size / 2**30:.1f} GiB, more than "
                         f"half the {available_memory() / 2**30:.1f} GiB free here")
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
    "`dls` with a `Resize(size)` in every item pipeline that has none, so that images of any size are resized as in training."
    for dl in dls.loaders:
        if not any(isinstance(t, Resize) for t in dl.after_item.fs): dl.after_item.add(Resize(size))
    return dls


# ---- image folders ----

def _inside(path:str, folder:str) -> bool: return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def find_images(root:Path, seen:set, skip=()) -> list:
    "Image files under `root`, each real file once (`seen`: real paths so far, real files before links to them)."
    real_root, skip = os.path.realpath(root), {os.path.realpath(p) for p in skip}
    found, dirs_seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        # not data: the run's own output folder, earlier runs' outputs, a folder reached twice (a loop outside the root)
        if real in dirs_seen or real in skip or is_run_folder(dirpath):
            dirnames[:] = []; continue
        dirs_seen.add(real)
        # hidden folders (a run's temporary outputs) and links to folders inside the root (a loop, or a second view
        # of images read anyway) are left out; links to folders elsewhere are followed
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith('.') and not (
            os.path.islink(os.path.join(dirpath, d)) and _inside(os.path.realpath(os.path.join(dirpath, d)), real_root))]
        found += [Path(dirpath) / f for f in sorted(filenames) if os.path.splitext(f)[1].lower() in image_extensions]
    unique = []
    for path in sorted(found, key=os.path.islink):          # stable: files first, then links (to files not yet read)
        if os.path.realpath(path) not in seen: seen.add(os.path.realpath(path)); unique.append(path)
    return unique


class FolderLabel:
    "Item getter: the label of an image file, the name of its top-level folder under one of `roots`."
    def __init__(self, roots): self.roots = [Path(r) for r in roots]
    def __call__(self, path):
        for root in self.roots:
            if Path(path).is_relative_to(root): return Path(path).relative_to(root).parts[0]
        raise ValueError(f"{str(path)!r} is under none of the data folders {[str(r) for r in self.roots]}")


@dataclass
class FolderItems:
    "The images of a data folder, their labels, which are held out for validation, and what the user should be told."
    files: list
    labels: list
    valid_idx: list
    roots: list
    notes: list = field(default_factory=list)
    @property
    def classes(self): return sorted(set(self.labels[i] for i in self.train_idx))
    @property
    def train_idx(self): return sorted(set(range(len(self.files))) - set(self.valid_idx))


def _class_images(folder:Path, seen:set, skip) -> dict:
    "{class: image files} of `folder`'s top-level class folders; images outside class folders are refused."
    files = find_images(folder, seen, skip)
    loose = [f for f in files if f.parent == folder]
    if loose:
        raise ValueError(f"{str(folder)!r} holds {len(loose)} images outside class folders (e.g. {loose[0].name!r}): "
                         f"labels are the class folders, so put each class's images in {folder}/<class>/")
    by_class = {}
    for f in files: by_class.setdefault(f.relative_to(folder).parts[0], []).append(f)
    return by_class


def _random_holdout(by_class:dict, valid_pct:float, seed:int) -> tuple:
    "(train, valid) {class: files}: `valid_pct` of each class held out at random, at least one image left to train on."
    small = {c: len(fs) for c, fs in by_class.items() if len(fs) < 2}
    if small:
        c, n = next(iter(small.items()))
        raise ValueError(f"class {c!r} has {n} image: a random {valid_pct:.0%} of each class is held out for validation, "
                         f"so each class needs at least 2 images (or give train/ and valid/ folders)")
    rng, train, valid = random.Random(seed), {}, {}
    for c, fs in sorted(by_class.items()):
        fs = fs.copy(); rng.shuffle(fs)
        k = min(math.ceil(valid_pct * len(fs)), len(fs) - 1)
        valid[c], train[c] = fs[:k], fs[k:]
    return train, valid


def _valid_folder(root:Path):
    found = [root / n for n in VALID_FOLDERS if (root / n).is_dir()]
    if len(found) > 1: raise ValueError(f"`data` {str(root)!r} has {' and '.join(f.name + '/' for f in found)}: keep one validation folder")
    return found[0] if found else None


def read_folder(path, valid_pct:float=0.2, seed:int=42, skip=()) -> FolderItems:
    "The images and labels of a data folder (`train/` and `valid/`, `val/` or `validation/`, or class folders); `skip`: folders to leave out."
    root, seen, notes = Path(path), set(), []
    if not root.is_dir(): raise ValueError(f"`data` folder {str(root)!r} does not exist")
    valid_dir = _valid_folder(root)
    if (root / 'train').is_dir():
        roots, train = [root / 'train'], _class_images(root / 'train', seen, skip)
        valid = _class_images(valid_dir, seen, skip) if valid_dir else None
        if valid is not None: roots.append(valid_dir)
    elif valid_dir is not None:
        raise ValueError(f"`data` {str(root)!r} has {valid_dir.name}/ but no train/ next to it")
    else: roots, train, valid = [root], _class_images(root, seen, skip), None
    n_train = sum(map(len, train.values()))
    if n_train == 0: raise ValueError(f"`data` folder {str(root)!r} holds no image files")
    if len(train) < 2: raise ValueError(f"`data` folder {str(roots[0])!r} needs at least 2 class folders, found {sorted(train)}")
    if valid is None:
        train, valid = _random_holdout(train, valid_pct, seed)
        notes.append(f"no valid/ folder: a random {valid_pct:.0%} of each class ({sum(map(len, valid.values()))} images) "
                     f"is held out for validation (seed {seed})")
    else:
        extra = sorted(set(valid) - set(train))
        if extra: raise ValueError(f"class {extra[0]!r} is in {valid_dir.name}/ but not in train/ (train/ has {sorted(train)})")
        if not any(valid.values()): raise ValueError(f"{str(valid_dir)!r} holds no images")
    n_train = sum(map(len, train.values()))
    files = [f for c in sorted(train) for f in train[c]] + [f for c in sorted(valid) for f in valid[c]]
    labels = [c for c in sorted(train) for _ in train[c]] + [c for c in sorted(valid) for _ in valid[c]]
    return FolderItems(files, labels, list(range(n_train, len(files))), roots, notes)


def _check_readable(files):
    bad = verify_images(files)
    if bad: raise ValueError(f"unreadable image {str(bad[0])!r} in `data` ({len(bad)} of {len(files)} files cannot be opened)")


def folder_dls(path, size:int=64, bs:int=32, valid_pct:float=0.2, seed:int=42, augment:bool=True, num_workers:int=0,
               items:FolderItems=None, **kwargs):
    "DataLoaders from an image folder (see `read_folder`; `items`: its result, when already read)."
    check_int('size', size, 1); check_int('bs', bs, 1)
    items = items or read_folder(path, valid_pct, seed)
    _check_readable(items.files)
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=items.classes)), get_x=open_image,
                       get_y=FolderLabel(items.roots), splitter=IndexSplitter(items.valid_idx),
                       item_tfms=Resize(size), batch_tfms=aug_transforms(size=size) if augment else None)
    return dblock.dataloaders(items.files, bs=bs, num_workers=num_workers, **kwargs)
