"Let fastai's DDP training (`learn.distrib_ctx()`) run on CPU processes too (gloo backend)."
import torch
import torch.distributed as dist
from fastcore.all import patch
from fastai.distributed import DistributedDL

__all__ = ['distrib_kwargs']


@patch
def _broadcast(self:DistributedDL, t, rank):
    "Broadcast `t` from `rank`; fastai moves it to CUDA for nccl, which gloo (CPU) does not need or have."
    t = torch.tensor(t, dtype=torch.long)
    if dist.get_backend() == 'nccl': t = t.cuda()
    dist.broadcast(t, rank)
    return t.cpu().tolist()


def distrib_kwargs() -> dict:
    "Keyword arguments for `learn.distrib_ctx`: on a machine without CUDA, CPU processes and no SyncBatchNorm."
    on_cpu = not torch.cuda.is_available()
    return dict(sync_bn=not on_cpu, cpu=on_cpu)
