"Idx files (MNIST's format): the reader, its checks, the checksums, and where the built-in Fashion-MNIST is found."
import gzip, hashlib, struct
from pathlib import Path

import numpy as np
import pytest

from fastai_resnetx.job import idx_data
from fastai_resnetx.job.idx_data import (read_idx, idx_folder, load_idx_folder, load_fashion_mnist, load_idx_data,
                                         IdxError, IDX_NAMES, FASHION_MNIST_MD5)

DEBIAN = Path('/usr/share/datasets/fashion-mnist')


def idx_bytes(a:np.ndarray) -> bytes:
    "The idx encoding of uint8 array `a`, written out by hand: magic (0, 0, 8 = ubyte, ndim), big-endian dims, data."
    return bytes([0, 0, 8, a.ndim]) + b''.join(struct.pack('>I', d) for d in a.shape) + a.astype(np.uint8).tobytes()


def write_idx_set(folder:Path, n_train=12, n_test=6, size=(5, 4), n_classes=3, gz=True, seed=0) -> dict:
    "Four small idx files in `folder` (random pixels, labels cycling through the classes); returns the arrays."
    rng = np.random.default_rng(seed)
    arrays = dict(train_images=rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
                  train_labels=np.arange(n_train, dtype=np.uint8) % n_classes,
                  test_images=rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
                  test_labels=np.arange(n_test, dtype=np.uint8) % n_classes)
    folder.mkdir(parents=True, exist_ok=True)
    for role, a in arrays.items():
        data = idx_bytes(a)
        if gz: (folder / f'{IDX_NAMES[role]}.gz').write_bytes(gzip.compress(data))
        else: (folder / IDX_NAMES[role]).write_bytes(data)
    return arrays


def md5s(folder:Path) -> dict:
    "MD5 of each file's decompressed content, computed here with hashlib (the reference the loader is checked against)."
    out = {}
    for name in IDX_NAMES.values():
        p = folder / f'{name}.gz'
        out[name] = hashlib.md5(gzip.decompress(p.read_bytes()) if p.exists() else (folder / name).read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize('gz', [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    d = load_idx_folder(idx_folder(tmp_path))
    assert d.train_images.dtype == __import__('torch').uint8 and d.size == (5, 4)
    assert np.array_equal(d.train_images.numpy(), arrays['train_images'])
    assert np.array_equal(d.test_labels.numpy(), arrays['test_labels'])
    assert d.classes == ('0', '1', '2') and d.source == str(tmp_path)


def test_torchvision_raw_layout_is_found(tmp_path):
    write_idx_set(tmp_path / 'FashionMNIST' / 'raw', gz=False)
    assert idx_folder(tmp_path)['test_labels'] == tmp_path / 'FashionMNIST' / 'raw' / 't10k-labels-idx1-ubyte'
    assert idx_folder(tmp_path / 'elsewhere') is None


def test_truncated_gzip_is_one_error_naming_the_file(tmp_path):
    write_idx_set(tmp_path)
    p = tmp_path / 'train-images-idx3-ubyte.gz'
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(IdxError, match=r"train-images-idx3-ubyte\.gz' cannot be read"): load_idx_data(tmp_path)


def test_truncated_data_wrong_magic_and_counts(tmp_path):
    arrays = write_idx_set(tmp_path, gz=False)
    p = tmp_path / 't10k-images-idx3-ubyte'
    p.write_bytes(idx_bytes(arrays['test_images'])[:-7])
    with pytest.raises(IdxError, match=r"should hold 120 bytes of data for its shape \[6, 5, 4\], holds 113"):
        load_idx_data(tmp_path)
    p.write_bytes(idx_bytes(arrays['test_labels']))            # a labels file where images belong
    with pytest.raises(IdxError, match=r"magic number 0x00000801, expected 0x00000803"): load_idx_data(tmp_path)
    p.write_bytes(idx_bytes(arrays['test_images'][:5]))        # 5 images, 6 labels
    with pytest.raises(IdxError, match=r"do not agree: 5 images, 6 labels"): load_idx_data(tmp_path)


def test_label_range_and_sizes(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(idx_bytes(np.array([0, 1, 2, 3, 0, 1])))
    with pytest.raises(IdxError, match=r"label 3, outside the 3 classes 0\.\.2"): load_idx_data(tmp_path)
    write_idx_set(tmp_path, gz=False)
    (tmp_path / 't10k-images-idx3-ubyte').write_bytes(idx_bytes(np.zeros((6, 4, 4))))
    with pytest.raises(IdxError, match=r"different sizes: \(5, 4\) and \(4, 4\)"): load_idx_data(tmp_path)


def test_checksum_error_for_the_built_in_data_set(tmp_path):
    write_idx_set(tmp_path)
    with pytest.raises(IdxError, match=r"is not Fashion-MNIST's train-images-idx3-ubyte \(MD5 of its content differs "
                                       r"from the published f4a8712d7a061bf5bd6d2ca38dc4d50a\)"):
        load_fashion_mnist(tmp_path)


@pytest.fixture
def sources(tmp_path, monkeypatch):
    "Debian's folder and the torch cache moved into `tmp_path`; the checksums those of small files the test writes."
    debian, torch_home = tmp_path / 'debian', tmp_path / 'torch'
    monkeypatch.setattr(idx_data, 'DEBIAN_FASHION_MNIST', debian)
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    return debian, torch_home / 'datasets' / 'FashionMNIST' / 'raw'


def test_sources_in_order_debian_then_torch_cache(sources, monkeypatch):
    debian, cache = sources
    write_idx_set(cache, seed=1)
    monkeypatch.setattr(idx_data, 'FASHION_MNIST_MD5', md5s(cache))
    assert load_fashion_mnist().source == str(cache)          # no Debian files: the torch cache
    write_idx_set(debian, seed=1)                               # the same content in Debian's folder: that comes first
    assert load_fashion_mnist().source == str(debian)


def test_offline_download_is_one_line_saying_how_to_get_the_files(sources, monkeypatch):
    import torchvision.datasets as tvd
    calls = []
    def offline(self):   # torchvision's own error when every mirror fails
        calls.append(str(self.root))
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\n<urlopen error>")
    monkeypatch.setattr(tvd.FashionMNIST, '_check_exists', lambda self: False)
    monkeypatch.setattr(tvd.FashionMNIST, 'download', offline)
    with pytest.raises(IdxError) as e: load_fashion_mnist()
    assert '\n' not in str(e.value) and 'apt-get install dataset-fashion-mnist' in str(e.value)
    assert calls == [str(sources[1].parent.parent)]             # torchvision's root: $TORCH_HOME/datasets
    with pytest.raises(IdxError, match='is not on this machine'): load_fashion_mnist(download=False)


def test_download_goes_through_torchvision_into_the_cache(sources, monkeypatch):
    import torchvision.datasets as tvd
    cache = sources[1]
    def download(self): write_idx_set(Path(self.raw_folder), seed=2)   # what torchvision writes: raw/*.gz
    monkeypatch.setattr(tvd.FashionMNIST, '_check_exists', lambda self: idx_folder(self.raw_folder) is not None)
    monkeypatch.setattr(tvd.FashionMNIST, 'download', download)
    monkeypatch.setattr(tvd.FashionMNIST, '_load_data', lambda self: (None, None))
    write_idx_set(cache.parent / 'ref', seed=2)
    monkeypatch.setattr(idx_data, 'FASHION_MNIST_MD5', md5s(cache.parent / 'ref'))
    assert load_fashion_mnist().source == str(cache)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_debian_files():
    d = load_fashion_mnist(DEBIAN)
    assert d.train_images.shape == (60000, 28, 28) and d.test_images.shape == (10000, 28, 28)
    # published: 6,000 training and 1,000 test images per class; the first training image is an ankle boot (9)
    assert d.train_labels.bincount().tolist() == [6000] * 10 and d.test_labels.bincount().tolist() == [1000] * 10
    assert int(d.train_labels[0]) == 9 and d.classes[9] == 'Ankle boot'
    assert md5s(DEBIAN) == FASHION_MNIST_MD5


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_dls_beside_digits_dls():
    from fastai_resnetx.job.tensor_data import fashion_mnist_dls
    dls = fashion_mnist_dls(bs=100, seed=0)
    xb, yb = dls.one_batch()
    assert xb.shape == (100, 1, 28, 28) and len(dls.valid_ds) == 10000 and dls.c == 10
    assert abs(float(dls.valid.one_batch()[0].mean())) < 0.2            # normalised with the training set's stats
