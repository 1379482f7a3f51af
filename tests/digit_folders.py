"Image folders of real handwritten digits (scikit-learn's), written as files in the layouts `resnetx train --data` reads."
import os, subprocess, sys
from pathlib import Path

import numpy as np
from PIL import Image


def digit_images(digit:int, n:int, size:int=16, start:int=0) -> list:
    "`n` real 8x8 images of `digit` (from the `start`-th on), as 8-bit gray PIL images upscaled to `size` px."
    from sklearn.datasets import load_digits
    d = load_digits()
    arrays = d.images[d.target == digit][start:start + n]
    assert len(arrays) == n, f'only {len(arrays)} images of {digit} from {start}'
    return [Image.fromarray(np.uint8(np.round(a * 255 / 16))).resize((size, size), Image.BILINEAR) for a in arrays]


def write_class(folder:Path, digit:int, n:int, start:int=0, size:int=16, sub:str='') -> list:
    "Write `n` images of `digit` into `folder`/`sub` as PNG files; their paths."
    target = folder / sub if sub else folder
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(digit_images(digit, n, size, start)):
        paths.append(target / f'{digit}_{start + i}.png'); img.save(paths[-1])
    return paths


def digit_folder(root:Path, classes=('3', '7'), n:int=12, layout:str='split', valid_name:str='valid', size:int=16) -> Path:
    "`n` images per class: `split` = train/ (3/4) and `valid_name`/ (1/4) of class folders; `flat` = class folders."
    for c in classes:
        n_train = n * 3 // 4 if layout == 'split' else n
        write_class(root / ('train' if layout == 'split' else '') / c, int(c), n_train, size=size)
        if layout == 'split': write_class(root / valid_name / c, int(c), n - n_train, start=n_train, size=size)
    return root


def run_resnetx(*args, cwd=None, timeout=600, **kw):
    "The real `resnetx` command in a subprocess (as `python -m fastai_resnetx`, the path torchrun takes)."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
    return subprocess.run([sys.executable, '-m', 'fastai_resnetx', *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env, **kw)


def error_lines(text:str) -> list: return [l for l in text.splitlines() if l.strip()]
