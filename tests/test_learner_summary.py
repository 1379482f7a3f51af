"Learner.summary: fastai's table and footer plus a FLOPs column, total equal to model_summary's."
import re
import numpy as np, pytest, torch
from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, PILImage, Resize, IndexSplitter, vision_learner, resnet18
from fastai_resnetx import model_summary

@pytest.fixture(scope='module')
def learn():
    "A vision_learner over 8 random 40px images in memory, resized to 32px"
    rng = np.random.default_rng(0)
    imgs = [PILImage.create(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(8)]
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda n: list(range(n)), get_x=lambda i: imgs[i],
                       get_y=lambda i: 'ab'[i % 2], item_tfms=Resize(32), splitter=IndexSplitter([6, 7]))
    return vision_learner(dblock.dataloaders(8, bs=4), resnet18, pretrained=False)

def total_flops(text): return int(re.search(r'Total FLOPs per item: \S+ \(([\d,]+)\)', text).group(1).replace(',', ''))

def test_summary_has_flops_column_and_fastai_footer(learn):
    text = learn.summary()
    assert 'Sequential (Input shape: 4 x 3 x 32 x 32)' in text      # fastai's header, with the batch size
    assert re.search(r'Layer \(type\)\s+Output Shape\s+Param #\s+Trainable\s+FLOPs', text)
    assert re.search(r'\nConv2d\s+9408\s+True\s+4\.817M', text)     # stem conv: 16*16*64*3*7*7 MACs, x2
    assert 'ReLU #2' in text                                        # torchvision's BasicBlock calls its ReLU twice
    for line in ('Total params: 11,704,896', 'Total trainable params:', 'Total non-trainable params:',
                 'Optimizer used:', 'Loss function:', 'Callbacks:', 'FLOPs = 2 x MACs'):
        assert line in text

def test_summary_total_equals_model_summary(learn):
    text = learn.summary()
    ms = model_summary(learn.model, input_size=(1, 3, 32, 32))
    assert total_flops(text) == ms.total_flops > 0
    flops_col = [r.flops for r in ms.rows if r.is_leaf]
    assert sum(flops_col) == ms.total_flops                          # the column's rows add up to the total
    assert total_flops(learn.summary(device='cpu')) == ms.total_flops  # meta and real tensors agree

def test_summary_leaves_learner_as_found(learn):
    learn.model.train()
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.summary(device='cpu')
    assert learn.model.training
    assert all(torch.equal(state[k], v) for k, v in learn.model.state_dict().items())
