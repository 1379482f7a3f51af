"Launched by test_distributed.py with torchrun: a tiny digits run on 2 CPU processes (gloo); each rank saves its weights."
import os, sys, torch
from fastai.vision.all import vision_learner, accuracy, set_seed
from fastai.distributed import *  # Learner.distrib_ctx
from fastai_resnetx import resnetx18, distrib_kwargs
from fastai_resnetx.job.data import digits_dls

out = sys.argv[1]
set_seed(0)
torch.set_num_threads(1)
dls = digits_dls(size=16, bs=32, n_items=256, augment=False)
learn = vision_learner(dls, resnetx18, pretrained=False, metrics=accuracy)
init = {k: v.clone() for k, v in learn.model.state_dict().items()}
with learn.distrib_ctx(**distrib_kwargs()):  # on CPU: gloo, no SyncBatchNorm
    learn.fit(1, 1e-3)
rank = int(os.environ.get('RANK', 0))
torch.save({'init': init, 'final': {k: v.cpu() for k, v in learn.model.state_dict().items()}}, os.path.join(out, f'rank{rank}.pth'))
print(f'rank {rank} of {os.environ.get("WORLD_SIZE")} done, backend {torch.distributed.get_backend() if torch.distributed.is_initialized() else None}')
