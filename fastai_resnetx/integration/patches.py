"The methods this package adds to or replaces in fastai's classes, each with its reason; applied on import."
import importlib.abc, importlib.util, sys

import torch
import torch.distributed as dist
from fastcore.basics import patch
from fastai.learner import Learner

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


def _broadcast(self, t, rank):
    "Broadcast `t` from `rank`; fastai moves it to CUDA for nccl, which gloo (CPU) does not need or have."
    # A private name, patched because there is no public way: fastai's `DistributedDL` broadcasts its seed and length
    # through `self._broadcast`, which calls `.cuda()` unconditionally, so CPU processes (gloo) fail without this.
    t = torch.tensor(t, dtype=torch.long)
    if dist.get_backend() == 'nccl': t = t.cuda()
    dist.broadcast(t, rank)
    return t.cpu().tolist()


def _patch_distributed(module):
    "Put `_broadcast` on fastai's `DistributedDL` in `module` (fastai.distributed, once imported)."
    _broadcast.__qualname__ = 'DistributedDL._broadcast'
    module.DistributedDL._broadcast = _broadcast


class _AfterImport(importlib.abc.MetaPathFinder):
    "Runs `fn(module)` right after module `name` is first imported, by whoever imports it."
    # fastai.distributed imports accelerate, whose import adds a global warning filter: importing it here would change
    # every user's warnings. So the patch waits for the user's (or the train job's) own import of it.
    def __init__(self, name:str, fn): self.name, self.fn = name, fn

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name: return None
        sys.meta_path.remove(self)                       # the real finders locate it; this finder's job ends here
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None: return spec
        run, after = spec.loader.exec_module, self.fn
        def exec_module(module):
            run(module)
            after(module)
        spec.loader.exec_module = exec_module
        return spec


def _when_imported(name:str, fn):
    "Run `fn` on module `name` now if it is imported, else as soon as it is."
    if name in sys.modules: fn(sys.modules[name])
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, fn))


_when_imported('fastai.distributed', _patch_distributed)
