"In-memory image tensors as fastai DataLoaders: batch augmentation against per-image references, order, normalisation."
import torch
import pytest

from fastai_resnetx.job.tensor_data import (Augment, ImageTensors, TensorImageDL, tensor_dls, random_crop, random_flip,
                                            random_erase)


def images(n=64, h=6, w=5, seed=0):
    return torch.randint(1, 256, (n, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_random_crop_matches_per_image_slices():
    x, pad = images(), 2
    out = random_crop(x, pad, torch.Generator().manual_seed(3))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, len(x)), generator=torch.Generator().manual_seed(3))
    padded = torch.zeros(len(x), 6 + 2 * pad, 5 + 2 * pad, dtype=torch.uint8)
    padded[:, pad:pad + 6, pad:pad + 5] = x
    for i in range(len(x)):   # the reference: one slice per image
        assert torch.equal(out[i], padded[i, dy[i]:dy[i] + 6, dx[i]:dx[i] + 5])
    assert len({(int(a), int(b)) for a, b in zip(dy, dx)}) > 10   # offsets really vary


def test_random_flip_flips_about_half_exactly():
    x = images(n=400)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) and not torch.equal(o, i) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 160 < sum(flipped) < 240


def test_random_erase_is_one_zero_rectangle_of_torchvision_size():
    x = images(n=400, h=28, w=28)
    out = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    n_erased = 0
    for o, i in zip(out, x):
        zero = o == 0                               # the inputs have no 0 pixels: every 0 is erased
        if not zero.any():
            assert torch.equal(o, i)
            continue
        n_erased += 1
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        box = zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and int(zero.sum()) == box.numel()          # one filled rectangle, nothing else touched
        assert torch.equal(o[~zero], i[~zero])
        assert 0.02 * 784 * 0.5 <= box.numel() <= 0.33 * 784 * 1.5  # torchvision's scale (rounding allowed)
    assert 160 < n_erased < 240


def test_augment_checks_its_arguments():
    with pytest.raises(ValueError, match=r"`pad` must be an integer >= 0, got -1"): Augment(pad=-1)
    with pytest.raises(ValueError, match=r"`erase` must be a number in \[0, 1\], got 2"): Augment(erase=2)
    assert not Augment() and Augment(flip=True)


def test_batches_cover_the_data_normalised_and_seeded():
    x, y = images(n=50), torch.arange(50) % 3
    ds = ImageTensors(x, y, ('a', 'b', 'c'))
    dls = tensor_dls(ds, ImageTensors(x[:10], y[:10], ds.vocab), bs=8, seed=1)
    batches = list(dls.train)
    assert len(batches) == len(dls.train) == 6 and all(b[0].shape == (8, 1, 6, 5) for b in batches)
    xb = torch.cat([b[0] for b in batches])
    yb = torch.cat([b[1] for b in batches])
    # each image once (50 // 8 * 8 = 48 of them): found again by its label and pixels
    mean, std = x.float().mean() / 255, x.float().std() / 255
    back = (xb[:, 0] * std + mean) * 255
    idx = [int(((x.float() - b).abs().amax((1, 2)) < 1e-3).nonzero()[0]) for b in back]
    assert len(set(idx)) == 48 and torch.equal(yb, y[idx])
    # the same seed gives the same order, another seed another
    again = tensor_dls(ds, ds, bs=8, seed=1)
    other = tensor_dls(ds, ds, bs=8, seed=2)
    assert torch.equal(next(iter(again.train))[1], batches[0][1])
    assert not torch.equal(next(iter(other.train))[0], batches[0][0])
    valid = list(dls.valid)        # in order, all of it, no augmentation
    assert torch.equal(torch.cat([b[1] for b in valid]), y[:10])


def test_image_tensors_refuse_what_they_cannot_hold():
    with pytest.raises(ValueError, match=r"`images` must be a uint8 tensor \(N, H, W\), got torch.float32"):
        ImageTensors(torch.zeros(2, 3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match='2 images but 3 labels'):
        ImageTensors(torch.zeros(2, 3, 3, dtype=torch.uint8), torch.zeros(3))
