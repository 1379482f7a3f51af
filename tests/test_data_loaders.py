"""What `digits_dls` and `folder_dls` put in a batch, against independent oracles: scikit-learn's raw digits, torch's
bilinear resize, the files on disk and `read_folder`'s split; their argument checks and memory check in their words."""
import sys
from pathlib import Path

import numpy as np, pytest, torch
import torch.nn.functional as F
from fastai.vision.all import AffineCoordTfm, Flip, PILImage, TensorImage, TensorImageBW
from PIL import Image
from sklearn.datasets import load_digits

from fastai_resnetx.job import data
from fastai_resnetx.job.data import digits_dls, folder_dls, open_image, read_folder
from digit_folders import digit_folder

RAW = load_digits()


def _8bit(i:int) -> np.ndarray: return np.uint8(np.round(RAW.images[i] * 255 / 16))   # 0..16 -> 0..255


@pytest.mark.parametrize('kw, words', [
    (dict(size=0), "`size` must be an integer >= 1, got 0"),
    (dict(bs=0), "`bs` must be an integer >= 1, got 0"),
    (dict(valid_pct=0), "`valid_pct` must be in (0, 1), got 0"),
    (dict(valid_pct=1), "`valid_pct` must be in (0, 1), got 1"),
])
def test_digits_dls_refusals_in_their_words(kw, words):
    with pytest.raises(ValueError) as e: digits_dls(**kw)
    assert str(e.value) == words


@pytest.mark.parametrize('kw', [dict(size=1), dict(bs=1), dict(valid_pct=0.9)])
def test_digits_dls_smallest_allowed_arguments(kw):
    dls = digits_dls(**{'n_items': 20, 'augment': False, 'size': 8, **kw})
    assert len(dls.valid_ds) == (18 if kw.get('valid_pct') else 4) and dls.train.bs == kw.get('bs', 64)
    assert dls.train.fake_l.num_workers == 0                  # in-memory digits: no worker processes by default


def test_digits_memory_check_at_its_boundary(monkeypatch):
    "n x size x size x 2 bytes may be at most the free memory: 10 digits at 8 px need 1,280 bytes (by hand)."
    monkeypatch.setattr(data, 'available_memory', lambda device=None: 1280)
    assert len(digits_dls(size=8, n_items=10, augment=False).train_ds) == 8
    monkeypatch.setattr(data, 'available_memory', lambda device=None: 1279)
    with pytest.raises(ValueError, match=r"^`size` 8: 10 digits at 8x8 px need 0.0 GiB, more than half the 0.0 GiB"):
        digits_dls(size=8, n_items=10)
    monkeypatch.setattr(data, 'available_memory', lambda device=None: 2**33)
    with pytest.raises(ValueError) as e: digits_dls(size=2048)   # 1797 x 2048^2 = 7,537,164,288 bytes = 7.02 GiB
    assert str(e.value) == "`size` 2048: 1797 digits at 2048x2048 px need 7.0 GiB, more than half the 8.0 GiB free here"


def test_digits_pixels_are_scikit_learns_scaled_to_8_bits():
    "At 8 px an item is the raw 0..16 digit times 255/16, rounded; its label the digit."
    dls = digits_dls(size=8, n_items=30, augment=False, bs=4)
    for ds in (dls.train_ds, dls.valid_ds):
        for k, i in enumerate(ds.items[:6]):
            img, label = ds[k]
            assert np.array_equal(np.asarray(img)[..., 0], _8bit(i)) and dls.vocab[label] == str(RAW.target[i])
    assert max(np.asarray(dls.train_ds[k][0]).max() for k in range(10)) == 255 and isinstance(img, PILImage)


def test_digits_upscaled_bilinear():
    "At 16 px each image is the 8-bit digit resized bilinear: within 0.5 of torch's bilinear (align_corners=False)."
    dls = digits_dls(size=16, n_items=12, augment=False)
    for k, i in enumerate(dls.train_ds.items[:4]):
        want = F.interpolate(torch.tensor(_8bit(i), dtype=torch.float64)[None, None], size=(16, 16), mode='bilinear',
                             align_corners=False)[0, 0].numpy()
        got = np.asarray(dls.train_ds[k][0])[..., 0].astype(float)
        assert np.abs(got - want).max() <= 0.5                                 # bicubic is 30 off here


def _affine_settings(dls) -> dict:
    "The rotation and zoom settings of the training batches' affine transform, and whether any flip is there."
    tfms = list(dls.train.after_batch)
    affine = [t for t in tfms if isinstance(t, AffineCoordTfm)]
    assert len(affine) <= 1 and not any(isinstance(t, Flip) for t in tfms)
    if not affine: return {}
    return {f.func.__name__: {k: float(v) for k, v in f.keywords.items() if k in ('max_deg', 'min_zoom', 'max_zoom', 'p')}
            for f in affine[0].aff_fs}


def test_digits_augmentation_rotates_and_zooms_without_flips():
    "Digits are not flipped (a flipped 2 is no digit): rotation up to 10 degrees and zoom up to 1.1, 3 batches in 4."
    assert _affine_settings(digits_dls(size=8, n_items=20)) == {
        'rotate_mat': {'max_deg': 10., 'p': 0.75}, 'zoom_mat': {'min_zoom': 1., 'max_zoom': 1.1, 'p': 0.75}}
    assert _affine_settings(digits_dls(size=8, n_items=20, augment=False)) == {}
    assert [type(t).__name__ for t in digits_dls(size=8, n_items=20).train.after_batch] == [
        'IntToFloatTensor', 'Rotate']                                           # no lighting, no warp


def _write16(path, arr16:np.ndarray):
    Image.fromarray(arr16.astype(np.uint16)).save(path)                       # a 16-bit grey PNG ('I;16')


def test_folder_dls_items_labels_split_and_pixels(tmp_path, monkeypatch):
    "Classes sorted, the split `read_folder` made, each label its folder, 16-bit files scaled by 1/257, batches resized."
    root = digit_folder(tmp_path / 'd', classes=('3', '7', '8'), n=8, size=20)
    ramp = (np.arange(400).reshape(20, 20) * 160).astype(np.uint16)            # 0..63,840: white if clipped to 8 bits
    _write16(root / 'valid' / '8' / 'sixteen.png', ramp)
    items = read_folder(root)
    monkeypatch.setattr(data, 'read_folder', lambda *a, **k: pytest.fail('items were given: nothing to read'))
    dls = folder_dls(root, size=20, bs=5, augment=False, items=items, val_bs=3)
    assert list(dls.vocab) == ['3', '7', '8'] and (dls.train.bs, dls.valid.bs, dls.train.fake_l.num_workers) == (5, 3, 0)
    assert list(dls.valid_ds.items) == [items.files[i] for i in items.valid_idx] and len(dls.valid_ds.items) == 7
    for ds in (dls.train_ds, dls.valid_ds):
        for k, f in enumerate(ds.items):
            img, label = ds[k]
            assert dls.vocab[label] == f.parent.name, f
            want = np.round(ramp / 257) if f.name == 'sixteen.png' else np.asarray(Image.open(f))
            assert np.array_equal(np.asarray(img)[..., 0], want) and np.asarray(img).shape == (20, 20, 3), f
    xb, yb = dls.one_batch()
    assert xb.shape == (5, 3, 20, 20) and yb.shape == (5,)


def test_folder_dls_resizes_every_image_and_augments_at_its_size(tmp_path):
    root = digit_folder(tmp_path / 'd', n=8, size=20)
    for i, f in enumerate(sorted((root / 'train' / '3').iterdir())[:3]):       # other sizes among them
        Image.open(f).resize((12 + 8 * i, 30)).save(f)
    dls = folder_dls(root, size=16, bs=12, seed=3)
    xb, _ = dls.one_batch()
    assert xb.shape == (12, 3, 16, 16)
    affine = [t for t in dls.train.after_batch if isinstance(t, AffineCoordTfm)]
    assert len(affine) == 1 and affine[0].size == 16                           # fastai's aug_transforms(size=16)
    assert not any(isinstance(t, AffineCoordTfm) for t in folder_dls(root, size=16, augment=False).train.after_batch)


def test_folder_dls_checks_and_passes_split_settings(tmp_path):
    root = digit_folder(tmp_path / 'd', n=10, layout='flat', size=16)
    for kw, words in ((dict(size=0), "`size` must be an integer >= 1, got 0"),
                      (dict(bs=0), "`bs` must be an integer >= 1, got 0")):
        with pytest.raises(ValueError) as e: folder_dls(root, **kw)
        assert str(e.value) == words
    a, b = (folder_dls(root, size=16, valid_pct=0.3, seed=s, augment=False) for s in (1, 2))
    want = read_folder(root, valid_pct=0.3, seed=1)
    assert list(a.valid_ds.items) == [want.files[i] for i in want.valid_idx] and len(a.valid_ds) == 6
    assert set(a.valid_ds.items) != set(b.valid_ds.items)


def _meminfo(key:str) -> int:
    "A /proc/meminfo figure in bytes (the kernel's own count, an oracle independent of psutil)."
    for line in open('/proc/meminfo'):
        if line.startswith(key + ':'): return int(line.split()[1]) * 1024


@pytest.mark.skipif(not Path('/proc/meminfo').exists(), reason='the oracle is Linux /proc/meminfo')
def test_available_memory_is_the_kernels_count(monkeypatch):
    "RAM: psutil's available (MemAvailable); without psutil, the free pages (MemFree); CUDA: the device's free bytes."
    assert abs(data.available_memory() - _meminfo('MemAvailable')) < 0.05 * _meminfo('MemAvailable')
    assert abs(data.available_memory('cpu') - _meminfo('MemAvailable')) < 0.05 * _meminfo('MemAvailable')
    asked = []
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda d: (asked.append(d), (123, 456))[1])
    assert data.available_memory('cuda:1') == 123 and asked == ['cuda:1']    # free, not total; of that device
    monkeypatch.setitem(sys.modules, 'psutil', None)                          # `import psutil` fails
    assert abs(data.available_memory() - _meminfo('MemFree')) < 0.05 * _meminfo('MemFree')


def test_digits_bw_and_keyword_arguments_reach_fastai():
    xb = digits_dls(size=8, n_items=20, bw=True, augment=False, bs=4).one_batch()[0]
    assert xb.shape[1] == 1 and type(xb) is TensorImageBW                      # grey: 1 channel, shown grey
    dls = digits_dls(size=8, n_items=20, augment=False, val_bs=3, bs=4)
    xb = dls.one_batch()[0]
    assert xb.shape[1] == 3 and type(xb) is TensorImage and dls.valid.bs == 3


@pytest.mark.parametrize('mode_values, want', [
    ((np.uint16, [0, 257, 65535, 1000]), [0, 1, 255, 4]),                  # 16-bit: / 257, rounded
    ((np.int32, [0, 255, 128, 7]), [0, 255, 128, 7]),                      # 32-bit integer within 8 bits: as it is
    ((np.int32, [0, 256, 514, 7]), [0, 1, 2, 0]),                          # 32-bit integer past 255: / 257
    ((np.int32, [0, 256, 128, 7]), [0, 1, 0, 0]),                          # (256, just past it)
    ((np.int32, [-300, 100_000, 257, 0]), [0, 255, 1, 0]),                 # below 0 and past 65535: clipped
])
def test_wide_integer_images_scaled_to_8_bits(tmp_path, mode_values, want):
    "16-bit and 32-bit integer grey images opened as fastai would see them: scaled into 0..255, never wrapped."
    dtype, values = mode_values
    arr = np.array(values, dtype=dtype).reshape(2, 2)
    img = Image.fromarray(arr)
    assert img.mode in ('I;16', 'I')
    for opened in (open_image(img), (img.save(tmp_path / 'w.tif'), open_image(tmp_path / 'w.tif'))[1]):
        got = np.asarray(opened)
        assert opened.mode == 'RGB' and got.dtype == np.uint8 and (got[..., 0] == got[..., 2]).all()
        assert got[..., 0].ravel().tolist() == want, (img.mode, values)


def test_a_pil_image_is_turned_upright_as_a_file_is(tmp_path):
    "open_image of a PIL image with EXIF orientation 6 (a phone photo's): the same upright pixels as from its file."
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)          # 4 x 3 stored on its side
    exif = Image.Exif(); exif[274] = 6
    stored.save(tmp_path / 'p.png', exif=exif)
    with Image.open(tmp_path / 'p.png') as img:
        img.load()
        got = np.asarray(open_image(img))
    assert got.shape == (3, 4, 3) and np.array_equal(got[..., 1], pixels)
    assert np.array_equal(np.asarray(open_image(tmp_path / 'p.png')), got)
