"Data sets in the idx format (MNIST's, Fashion-MNIST's): find the four files, check them, read them into uint8 tensors."
import contextlib, gzip, hashlib, io, os, zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ['IDX_NAMES', 'FASHION_MNIST_MD5', 'FASHION_MNIST_CLASSES', 'DEBIAN_FASHION_MNIST', 'IdxError', 'IdxData',
           'read_idx', 'idx_folder', 'torch_cache_root', 'fashion_mnist_sources', 'load_idx_folder',
           'load_fashion_mnist', 'is_idx_folder', 'is_fashion_mnist', 'load_idx_data']

# the four files of the official split: 60,000 training and 10,000 test images
IDX_NAMES = dict(train_images='train-images-idx3-ubyte', train_labels='train-labels-idx1-ubyte',
                 test_images='t10k-images-idx3-ubyte', test_labels='t10k-labels-idx1-ubyte')
# MD5 of each file's content (decompressed): the same for Zalando's .gz files, Debian's (recompressed, so their .gz
# checksums differ from the published ones) and torchvision's extracted `raw/` files
FASHION_MNIST_MD5 = {'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
                     'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
                     't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
                     't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965'}
# torchvision's `FashionMNIST.classes`, in label order
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                         'Ankle boot')
DEBIAN_FASHION_MNIST = Path('/usr/share/datasets/fashion-mnist')   # `apt-get install dataset-fashion-mnist`
_MAGIC = {3: 0x00000803, 1: 0x00000801}   # unsigned bytes, 3 dimensions (images) or 1 (labels)
_MAX_BYTES = 2**31                          # an idx file bigger than this is not an image data set we can hold
HOW_TO_GET = ("install Debian's package (apt-get install dataset-fashion-mnist), or put the four idx files "
              f"({', '.join(n + '.gz' for n in IDX_NAMES.values())}) in a folder and pass it as --data")


class IdxError(ValueError):
    "An idx file that is missing, damaged or does not fit with the others: the message names the file."


def read_idx(path:Path|str, ndim:int) -> np.ndarray:
    "The uint8 array in idx file `path` (.gz or not) with `ndim` dimensions; an `IdxError` naming the file if damaged."
    path = Path(path)
    try:
        if not path.is_file(): raise IdxError(f"idx file {str(path)!r} is not a regular file")
        with (gzip.open(path, 'rb') if path.suffix == '.gz' else open(path, 'rb')) as f: data = f.read(_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:     # truncated or not gzip: gzip says which
        raise IdxError(f"idx file {str(path)!r} cannot be read: {e or type(e).__name__}") from None
    if len(data) > _MAX_BYTES: raise IdxError(f"idx file {str(path)!r} holds more than {_MAX_BYTES} bytes")
    magic = int.from_bytes(data[:4], 'big') if len(data) >= 4 else None
    if magic != _MAGIC[ndim]:
        raise IdxError(f"idx file {str(path)!r} has magic number {'none' if magic is None else f'{magic:#010x}'}, "
                       f"expected {_MAGIC[ndim]:#010x} ({'images' if ndim == 3 else 'labels'}: unsigned bytes, "
                       f"{ndim} dimension{'s' * (ndim > 1)})")
    if len(data) < 4 + 4 * ndim:
        raise IdxError(f"idx file {str(path)!r} is too short for an idx header ({len(data)} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise IdxError(f"idx file {str(path)!r} should hold {int(np.prod(dims))} bytes of data for its shape {dims}, "
                       f"holds {len(body)} (truncated or padded)")
    if ndim == 3 and (dims[1] < 1 or dims[2] < 1): raise IdxError(f"idx file {str(path)!r} has images of size {dims}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _md5(path:Path) -> str:
    "MD5 of the file's content, decompressed if it is a .gz."
    h = hashlib.md5()
    with (gzip.open(path, 'rb') if path.suffix == '.gz' else open(path, 'rb')) as f:
        for chunk in iter(lambda: f.read(1 << 20), b''): h.update(chunk)
    return h.hexdigest()


def idx_folder(folder:Path|str) -> dict | None:
    "The four idx files in `folder` (or its torchvision layout `FashionMNIST/raw`, `raw`) by role, or None if absent."
    folder = Path(folder)
    for where in (folder, folder / 'raw', folder / 'FashionMNIST' / 'raw'):
        files = {}
        for role, name in IDX_NAMES.items():
            found = [where / f'{name}{ext}' for ext in ('.gz', '') if (where / f'{name}{ext}').exists()]
            if found: files[role] = found[0]
        if len(files) == len(IDX_NAMES): return files
    return None


def is_idx_folder(folder:Path|str) -> bool:
    "Whether `folder` holds an idx data set's files (any of the four names): then it is read as one, not as images."
    folder = Path(folder)
    return any((where / f'{name}{ext}').exists() for where in (folder, folder / 'raw', folder / 'FashionMNIST' / 'raw')
               for name in IDX_NAMES.values() for ext in ('.gz', ''))


def torch_cache_root() -> Path:
    "torchvision data sets' root in the torch cache: `$TORCH_HOME/datasets` (beside the hub's weights)."
    import torch
    return Path(torch.hub.get_dir()).parent / 'datasets'


def fashion_mnist_sources() -> list:
    "Where the built-in Fashion-MNIST is looked for, in order: Debian's package, then torchvision's in the cache."
    return [DEBIAN_FASHION_MNIST, torch_cache_root() / 'FashionMNIST' / 'raw']


@dataclass
class IdxData:
    "An idx data set in memory: uint8 images (N, H, W), int64 labels, class names, and the folder it came from."
    train_images: 'torch.Tensor'
    train_labels: 'torch.Tensor'
    test_images: 'torch.Tensor'
    test_labels: 'torch.Tensor'
    classes: tuple
    source: str

    @property
    def size(self) -> tuple: return tuple(self.train_images.shape[1:])


def load_idx_folder(files:dict, classes=None, md5:dict=None, source:str=None) -> IdxData:
    "The data set in idx `files` (by role): checked (counts, label range, `md5` of the content if given), in memory."
    import torch
    for role, path in files.items():
        if md5 is not None and _md5(path) != md5[IDX_NAMES[role]]:
            raise IdxError(f"idx file {str(path)!r} is not Fashion-MNIST's {IDX_NAMES[role]} (MD5 of its content "
                           f"differs from the published {md5[IDX_NAMES[role]]}): damaged or another data set")
    arrays = {role: read_idx(path, 3 if role.endswith('images') else 1) for role, path in files.items()}
    for split in ('train', 'test'):
        n_img, n_lab = len(arrays[f'{split}_images']), len(arrays[f'{split}_labels'])
        if n_img != n_lab:
            raise IdxError(f"idx files {str(files[split + '_images'])!r} and {str(files[split + '_labels'])!r} do not "
                           f"agree: {n_img} images, {n_lab} labels")
        if n_img == 0: raise IdxError(f"idx file {str(files[split + '_images'])!r} holds no images")
    if arrays['train_images'].shape[1:] != arrays['test_images'].shape[1:]:
        raise IdxError(f"idx files {str(files['train_images'])!r} and {str(files['test_images'])!r} hold images of "
                       f"different sizes: {arrays['train_images'].shape[1:]} and {arrays['test_images'].shape[1:]}")
    n_classes = int(arrays['train_labels'].max()) + 1 if classes is None else len(classes)
    for role in ('train_labels', 'test_labels'):
        bad = arrays[role] >= n_classes
        if bad.any():
            raise IdxError(f"idx file {str(files[role])!r} has label {int(arrays[role][bad][0])}, outside the "
                           f"{n_classes} classes 0..{n_classes - 1}{'' if classes is None else ' ' + str(classes)}")
    classes = tuple(str(i) for i in range(n_classes)) if classes is None else tuple(classes)
    t = {role: torch.from_numpy(a.copy()) for role, a in arrays.items()}
    return IdxData(t['train_images'], t['train_labels'].long(), t['test_images'], t['test_labels'].long(), classes,
                   source or str(Path(files['train_images']).parent))


def load_fashion_mnist(folder:Path|str=None, download:bool=True) -> IdxData:
    "Fashion-MNIST (checked against its published MD5s) from `folder`, Debian's package, the torch cache or a download."
    if folder is not None:
        files = idx_folder(folder)
        if files is None: raise IdxError(f"folder {str(folder)!r} does not hold Fashion-MNIST's four idx files")
        return load_idx_folder(files, FASHION_MNIST_CLASSES, FASHION_MNIST_MD5)
    for where in fashion_mnist_sources():
        files = idx_folder(where)
        if files is not None: return load_idx_folder(files, FASHION_MNIST_CLASSES, FASHION_MNIST_MD5)
    if not download:
        raise IdxError(f"Fashion-MNIST is not on this machine (looked in {[str(p) for p in fashion_mnist_sources()]}): "
                       f"{HOW_TO_GET}")
    return _download_fashion_mnist()


def _download_fashion_mnist() -> IdxData:
    "torchvision's own download into the torch cache; offline, one line saying how to get the files."
    from torchvision.datasets import FashionMNIST
    root = torch_cache_root()
    try:
        os.makedirs(root, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()): FashionMNIST(root, train=True, download=True)   # its chatter
    except Exception as e:   # no network: torchvision tries every mirror, then raises
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise IdxError(f"Fashion-MNIST is not on this machine and could not be downloaded into {str(root)!r} "
                       f"({reason[:160]}): {HOW_TO_GET}") from None
    files = idx_folder(root / 'FashionMNIST' / 'raw')
    if files is None: raise IdxError(f"torchvision's download left no idx files in {str(root / 'FashionMNIST')!r}")
    return load_idx_folder(files, FASHION_MNIST_CLASSES, FASHION_MNIST_MD5)


def is_fashion_mnist(data) -> bool:
    "Whether `data` names the built-in Fashion-MNIST: the word 'fashion-mnist' (and no folder of that name here)."
    return str(data) == 'fashion-mnist' and not Path(data).is_dir()


def load_idx_data(data) -> IdxData:
    "The idx data set `data` names: 'fashion-mnist' (built in, checksummed) or a folder of idx files (checked)."
    if is_fashion_mnist(data): return load_fashion_mnist()
    files = idx_folder(data)
    if files is None:
        raise IdxError(f"`--data` {str(data)!r} is neither 'fashion-mnist' nor a folder holding the four idx files "
                       f"({', '.join(n + '[.gz]' for n in IDX_NAMES.values())})")
    return load_idx_folder(files)
