"Let fastai's DDP training (`learn.distrib_ctx()`) run on CPU processes too (gloo; its fastai patch: patches.py)."
import torch

__all__ = ['distrib_kwargs']


def distrib_kwargs() -> dict:
    "Keyword arguments for `learn.distrib_ctx`: on a machine without CUDA, CPU processes and no SyncBatchNorm."
    on_cpu = not torch.cuda.is_available()
    return dict(sync_bn=not on_cpu, cpu=on_cpu)
