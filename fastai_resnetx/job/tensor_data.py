"Images held in memory as uint8 tensors, served to fastai in batches, with augmentation as batch tensor ops."
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fastai.data.load import DataLoader
from fastai.data.core import DataLoaders
from fastai.losses import CrossEntropyLossFlat

from ..checks import check_int, check_float

__all__ = ['Augment', 'ImageTensors', 'TensorImageDL', 'tensor_dls', 'idx_dls', 'fashion_mnist_dls', 'IdxImage',
           'IdxLabel', 'predict_dls', 'random_crop', 'random_flip', 'random_erase']


@dataclass(frozen=True)
class Augment:
    "Training augmentation: random crop after zero-padding by `pad` px, horizontal flip, random erasing (probability)."
    pad: int = 0
    flip: bool = False
    erase: float = 0.

    def __post_init__(self):
        check_int('pad', self.pad, 0)
        if self.flip not in (True, False): raise ValueError(f"`flip` must be True or False, got {self.flip!r}")
        check_float('erase', self.erase, 0, 1)

    def __bool__(self): return bool(self.pad or self.flip or self.erase)

    def __call__(self, x:torch.Tensor, gen:torch.Generator) -> torch.Tensor:
        "Augment a batch `x` (N, H, W) of uint8 images with random numbers from `gen`."
        if self.pad: x = random_crop(x, self.pad, gen)
        if self.flip: x = random_flip(x, gen)
        if self.erase: x = random_erase(x, self.erase, gen)
        return x


def random_crop(x:torch.Tensor, pad:int, gen:torch.Generator) -> torch.Tensor:
    "Each image of batch `x` (N, H, W) zero-padded by `pad` px and cropped back to H x W at a random offset."
    n, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols]


def random_flip(x:torch.Tensor, gen:torch.Generator) -> torch.Tensor:
    "Each image of batch `x` (N, H, W) flipped left-right with probability 1/2."
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip[:, None, None], x.flip(-1), x)


def random_erase(x:torch.Tensor, p:float, gen:torch.Generator, scale=(0.02, 0.33), ratio=(0.3, 3.3)) -> torch.Tensor:
    "Each image of `x` (N, H, W), with probability `p`, gets a rectangle of 0s (torchvision's RandomErasing sizes)."
    n, h, w = x.shape
    area = h * w * torch.empty(n).uniform_(*scale, generator=gen)
    aspect = torch.exp(torch.empty(n).uniform_(*torch.log(torch.tensor(ratio)).tolist(), generator=gen))
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    y0 = (torch.rand(n, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(n, generator=gen) * (w - ew + 1)).long()
    on = torch.rand(n, generator=gen) < p
    r, c = torch.arange(h), torch.arange(w)
    mask = (((r >= y0[:, None]) & (r < (y0 + eh)[:, None]))[:, :, None]
            & ((c >= x0[:, None]) & (c < (x0 + ew)[:, None]))[:, None, :] & on[:, None, None])
    return x.masked_fill(mask, 0)


class ImageTensors:
    "A data set of uint8 images (N, H, W) and int64 labels held in memory; an item is (float image (1, H, W), label)."
    def __init__(self, images:torch.Tensor, labels:torch.Tensor, vocab=None):
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(f"`images` must be a uint8 tensor (N, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images): raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.vocab = images, labels.long(), vocab
    def __len__(self): return len(self.images)
    def __getitem__(self, i): return self.images[i][None].float() / 255, self.labels[i]
    def new_empty(self): return type(self)(self.images[:0], self.labels[:0], self.vocab)
    @property
    def loss_func(self): return CrossEntropyLossFlat()   # what fastai's Learner takes from a categorical data set


class TensorImageDL(DataLoader):
    "A fastai `DataLoader` over `ImageTensors`: each batch made by indexing (no per-item work), (N, 1, H, W) floats."
    def __init__(self, dataset:ImageTensors=None, augment:Augment=None, mean:float=0., std:float=1., **kwargs):
        super().__init__(dataset, **kwargs)
        self.augment, self.mean, self.std = augment or Augment(), mean, std

    def new(self, dataset=None, cls=None, **kwargs):
        "A copy of this loader (fastai's `new`), keeping its augmentation and normalisation."
        res = super().new(dataset, cls, **kwargs)
        res.augment, res.mean, res.std = kwargs.get('augment', self.augment), self.mean, self.std
        return res

    def create_batches(self, samps):
        idxs = torch.tensor(list(samps), dtype=torch.long)
        # the augmentation's random numbers come from fastai's per-epoch RNG: seeded by `set_seed`, like the order
        gen = torch.Generator().manual_seed(self.rng.randint(0, 2**63 - 1))
        for i in range(0, len(idxs), self.bs):
            b = idxs[i:i + self.bs]
            if self.drop_last and len(b) < self.bs: break
            x = self.dataset.images[b]
            if self.augment: x = self.augment(x, gen)
            yield (x[:, None].float().sub_(255 * self.mean).div_(255 * self.std), self.dataset.labels[b])

    @property
    def vocab(self): return self.dataset.vocab

    @property
    def c(self): return len(self.dataset.vocab)


def tensor_dls(train:ImageTensors, valid:ImageTensors, bs:int=256, augment:Augment=None, seed:int=None,
               device=None) -> DataLoaders:
    "fastai `DataLoaders` of in-memory image tensors: shuffled, augmented training batches; validation in order."
    check_int('bs', bs, 1)
    mean = float(train.images.float().mean() / 255)
    std = float(train.images.float().std() / 255)
    if seed is not None: random.seed(seed)   # fastai's DataLoader draws its RNG from `random` when it is made
    trn = TensorImageDL(train, augment, mean, std, bs=bs, shuffle=True, drop_last=True, device=device)
    val = TensorImageDL(valid, None, mean, std, bs=bs * 2, shuffle=False, drop_last=False, device=device)
    dls = DataLoaders(trn, val, device=device)
    dls.vocab, dls.c = train.vocab, len(train.vocab)
    return dls


def idx_dls(data, bs:int=256, augment:Augment=None, seed:int=None, device=None) -> DataLoaders:
    "fastai `DataLoaders` of an idx data set in memory (`IdxData`): its training images, validated on its test set."
    return tensor_dls(ImageTensors(data.train_images, data.train_labels, data.classes),
                      ImageTensors(data.test_images, data.test_labels, data.classes), bs=bs, augment=augment, seed=seed,
                      device=device)


def fashion_mnist_dls(bs:int=256, augment:Augment=Augment(flip=True), seed:int=None, folder=None) -> DataLoaders:
    "Fashion-MNIST as fastai `DataLoaders` (60,000 training images; the 10,000 test images validate), checksummed."
    from .idx_data import load_fashion_mnist
    return idx_dls(load_fashion_mnist(folder), bs=bs, augment=augment, seed=seed)


class IdxLabel:
    "Item getter: the class name of image `i` of an idx data set."
    def __init__(self, labels, vocab): self.labels, self.vocab = labels, vocab
    def __call__(self, i): return self.vocab[int(self.labels[i])]


class IdxImage:
    "Item getter: image `i` of an idx data set as a grey `PILImageBW` (where the exported learner's `predict` starts)."
    def __init__(self, images): self.images = images
    def __call__(self, i):
        from PIL import Image
        from fastai.vision.core import PILImageBW
        return PILImageBW(Image.fromarray(self.images[i].numpy()))


def predict_dls(dls:DataLoaders):
    "fastai's own image pipeline for `dls` (grey PIL image, resize, normalise): what an exported learner predicts with."
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, PILImageBW, Resize, Normalize, IndexSplitter
    dl = dls.train
    images = dl.dataset.images[:2].clone()   # a copy: a view would take the whole data set into export.pkl
    labels = dl.dataset.labels[:2].clone()
    # the vocabulary in label order (the model's output order): fastai would sort it
    dblock = DataBlock(blocks=(ImageBlock(PILImageBW), CategoryBlock(vocab=list(dl.vocab), sort=False)),
                       get_x=IdxImage(images), get_y=IdxLabel(labels, list(dl.vocab)), splitter=IndexSplitter([1]),
                       item_tfms=Resize(tuple(images.shape[1:])),
                       batch_tfms=Normalize.from_stats([dl.mean], [dl.std]))
    return dblock.dataloaders([0, 1], bs=2, num_workers=0)
