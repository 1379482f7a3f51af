"The methods this package adds to or replaces in fastai's classes, each with its reason; applied on import."
import torch
import torch.distributed as dist
from fastcore.basics import patch
from fastai.learner import Learner
from fastai.distributed import DistributedDL

from .learner_summary import summary_with_flops

__all__ = []   # nothing to import: the patches take effect when the package is imported

# Two more live next to what they need, in modules others also change: `Learner.arch_summary`
# (inspection/arch_summary.py, a new method, replaces nothing) and `Learner.to_bf16` (integration/precision.py:
# fastai's autocasts on CUDA only; ours runs bf16 on the learner's device, CPU included, so importing the package
# changes it for every learner).
# fastai's `model_meta` entries (integration/fastai_meta.py) are its public registry for archs, not a patch.


@patch
def summary(self:Learner, device='meta'):
    "fastai's summary of the model, optimizer and loss function, plus the FLOPs of every layer call and in total."
    # Replaces fastai's `Learner.summary` (same table and footer, plus a FLOPs column and total): `learn.summary()`
    # is where a fastai user looks, so the FLOPs come without a new name to learn.
    return summary_with_flops(self, device)


@patch
def _broadcast(self:DistributedDL, t, rank):
    "Broadcast `t` from `rank`; fastai moves it to CUDA for nccl, which gloo (CPU) does not need or have."
    # A private name, patched because there is no public way: fastai's `DistributedDL` broadcasts its seed and length
    # through `self._broadcast`, which calls `.cuda()` unconditionally, so CPU processes (gloo) fail without this.
    t = torch.tensor(t, dtype=torch.long)
    if dist.get_backend() == 'nccl': t = t.cuda()
    dist.broadcast(t, rank)
    return t.cpu().tolist()
