"Learner.summary: fastai's table and footer plus a FLOPs column, on what the model really gets, checked by hand and against torchvision."
import re
import numpy as np, pytest, torch
from torch import nn
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, PILImage, PILImageBW, Resize, IndexSplitter, Callback,
                               Learner, vision_learner, resnet18)
from torchvision.models import ResNet18_Weights
from fastai_resnetx import resnetx18
import fastai_resnetx.integration.learner_summary as learner_summary

def resnet18_macs_at_32px():
    "torchvision's resnet18 body (no pool, no fc) on 32x32 by hand: out pixels x out channels x in channels x kernel area"
    stem = 16*16 * 64 * 3 * 7*7
    layer1 = 4 * (8*8 * 64 * 64 * 3*3)
    def stage(px, c): return px * c * (c//2) * 3*3 + 3 * (px * c * c * 3*3) + px * c * (c//2)  # conv, 3 convs, 1x1 shortcut
    return stem + layer1 + stage(4*4, 128) + stage(2*2, 256) + stage(1*1, 512)

BODY_MACS = resnet18_macs_at_32px()
HEAD_MACS = 1024*512 + 512*2  # fastai's head: concat pool (2 x 512 features) -> Linear(1024, 512) -> Linear(512, 2)

def test_hand_count_agrees_with_torchvision_ops():
    "At 224px every feature map is 7x7 times larger, and the 1000-class fc adds 512 x 1000: torchvision's published `_ops`"
    assert round((49 * BODY_MACS + 512*1000) / 1e9, 3) == ResNet18_Weights.IMAGENET1K_V1.meta['_ops'] == 1.814

def dls_of(pil_cls=PILImage, channels=3):
    "DataLoaders over 8 random 40px images in memory, resized to 32px, batches of 4"
    rng = np.random.default_rng(0)
    shape = (40, 40, 3) if channels == 3 else (40, 40)
    imgs = [pil_cls.create(rng.integers(0, 255, shape, dtype=np.uint8)) for _ in range(8)]
    dblock = DataBlock(blocks=(ImageBlock(pil_cls), CategoryBlock), get_items=lambda n: list(range(n)),
                       get_x=lambda i: imgs[i], get_y=lambda i: 'ab'[i % 2], item_tfms=Resize(32),
                       splitter=IndexSplitter([6, 7]))
    return dblock.dataloaders(8, bs=4)

@pytest.fixture(scope='module')
def learn(): return vision_learner(dls_of(), resnet18, pretrained=False)

def total_macs(text): return int(re.search(r'MACs: \S+ \(([\d,]+)\)', text).group(1).replace(',', ''))

def test_summary_has_flops_column_and_fastai_footer(learn):
    text = learn.summary()
    assert 'Sequential (Input shape: 4 x 3 x 32 x 32)' in text      # fastai's header, with the batch size
    assert re.search(r'Layer \(type\)\s+Output Shape\s+Param #\s+Trainable\s+FLOPs', text)
    assert re.search(r'\nConv2d\s+9408\s+True\s+4\.817M', text)     # stem conv: 16*16*64*3*7*7 MACs, x2
    assert 'ReLU #2' in text                                        # torchvision's BasicBlock calls its ReLU twice
    for line in ('Total params: 11,704,896', 'Total trainable params:', 'Total non-trainable params:',
                 'Optimizer used:', 'Loss function:', 'Callbacks:', 'FLOPs = 2 x MACs', 'counted on meta'):
        assert line in text

def test_summary_total_is_the_hand_count(learn):
    assert total_macs(learn.summary()) == BODY_MACS + HEAD_MACS == 37_536_768
    assert total_macs(learn.summary(device='cpu')) == BODY_MACS + HEAD_MACS   # real tensors agree

def test_summary_leaves_learner_as_found(learn):
    learn.model.train()
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.summary(device='cpu')
    assert learn.model.training
    assert all(torch.equal(state[k], v) for k, v in learn.model.state_dict().items())

class GrayToRGB(Callback):
    "A callback that turns the gray batch into 3 channels, as the model needs: the batch `one_batch` gives has 1"
    def before_batch(self): self.learn.xb = (self.xb[0].expand(-1, 3, -1, -1),)

def test_summary_counts_the_batch_the_model_gets():
    learn = vision_learner(dls_of(PILImageBW, channels=1), resnet18, pretrained=False, cbs=GrayToRGB())
    text = learn.summary()
    assert 'Input shape: 4 x 3 x 32 x 32' in text and total_macs(text) == BODY_MACS + HEAD_MACS

def test_summary_of_a_resnetx_learner(learn):
    "resnetx18 (fold 1) is a ResNet18: fastai's body and head count what torchvision's do"
    rx = vision_learner(learn.dls, resnetx18, pretrained=False)
    text = rx.summary()
    assert total_macs(text) == BODY_MACS + HEAD_MACS and 'counted on meta' in text
    assert f'Total params: {sum(p.numel() for p in rx.model.parameters()):,}' in text

class ScaledByMean(nn.Module):
    "A 1x1 conv whose output is scaled by a value read back from the data: `meta` has no value to read"
    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 2, 1, bias=False), nn.AdaptiveAvgPool2d(1)
    def forward(self, x): return self.pool(self.conv(x) * x.mean().item()).flatten(1)

def test_summary_falls_back_from_meta(learn):
    text = Learner(learn.dls, ScaledByMean(), loss_func=nn.CrossEntropyLoss()).summary()
    assert re.search(r'counted on cpu \(meta could not run it: \w+', text)
    assert total_macs(text) == 32*32 * 2 * 3

def test_summary_without_flops_still_prints_fastais_table(learn, monkeypatch):
    def fail(*args, **kwargs): raise RuntimeError('no counter today')
    monkeypatch.setattr(learner_summary, 'model_summary', fail)
    text = learn.summary()
    assert 'Total params: 11,704,896' in text and 'Callbacks:' in text              # fastai's own table
    assert 'FLOPs not counted: RuntimeError: no counter today' in text
