"The built-in data set (scikit-learn's handwritten digits) and image folders, as fastai DataLoaders."
from pathlib import Path

import numpy as np
from PIL import Image
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, PILImage, PILImageBW, RandomSplitter, Resize,
                               aug_transforms, get_image_files, GrandparentSplitter, parent_label, verify_images)

__all__ = ['DigitImage', 'DigitLabel', 'digits_dls', 'folder_dls']


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


def _check_positive(name, value, kind=int):
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"`{name}` must be a positive {kind.__name__}, got {value!r}")


def digits_dls(size:int=32, bs:int=64, valid_pct:float=0.2, seed:int=42, augment:bool=True, bw:bool=False,
               n_items:int=None, num_workers:int=0, **kwargs):
    "DataLoaders of scikit-learn's 1797 real 8x8 handwritten digits (or the first `n_items`), upscaled to `size`, fixed split."
    from sklearn.datasets import load_digits
    _check_positive('size', size); _check_positive('bs', bs)
    if not 0 < valid_pct < 1: raise ValueError(f"`valid_pct` must be in (0, 1), got {valid_pct!r}")
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    # upscale once here (bilinear, as fastai's Resize would), not per item and epoch
    images = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in images])
    batch_tfms = aug_transforms(do_flip=False, max_rotate=10., max_zoom=1.1, max_lighting=0., max_warp=0.,
                                p_affine=0.75) if augment else None
    dblock = DataBlock(blocks=(ImageBlock(PILImageBW if bw else PILImage), CategoryBlock),
                       get_x=DigitImage(images, bw), get_y=DigitLabel(digits.target),
                       splitter=RandomSplitter(valid_pct, seed=seed), batch_tfms=batch_tfms)
    items = list(range(len(images) if n_items is None else min(n_items, len(images))))
    return dblock.dataloaders(items, bs=bs, num_workers=num_workers, **kwargs)


def folder_dls(path, size:int=64, bs:int=32, valid_pct:float=0.2, seed:int=42, augment:bool=True, num_workers:int=0,
               **kwargs):
    "DataLoaders from an image folder: `train/` and `valid/` of class folders, or class folders split at random."
    path = Path(path)
    _check_positive('size', size); _check_positive('bs', bs)
    if not path.is_dir(): raise ValueError(f"`data` folder {str(path)!r} does not exist")
    files = get_image_files(path)
    if not files: raise ValueError(f"`data` folder {str(path)!r} holds no image files")
    bad = verify_images(files)
    if bad: raise ValueError(f"unreadable image {str(bad[0])!r} in `data` ({len(bad)} of {len(files)} files cannot be opened)")
    batch_tfms = aug_transforms(size=size) if augment else None
    if (path / 'train').is_dir() and (path / 'valid').is_dir():
        splitter, label = GrandparentSplitter('train', 'valid'), parent_label
    else:
        splitter, label = RandomSplitter(valid_pct, seed=seed), parent_label
    classes = sorted({label(f) for f in files})
    if len(classes) < 2: raise ValueError(f"`data` folder {str(path)!r} needs at least 2 class folders, found {classes}")
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=label, splitter=splitter,
                       item_tfms=Resize(size), batch_tfms=batch_tfms)
    return dblock.dataloaders(path, bs=bs, num_workers=num_workers, **kwargs)
