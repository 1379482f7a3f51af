"""The study's warm start (`resnetx study --warm FILE`): every arm's body starts from one checkpoint of the arch at
fold 1 (a fold > 1 keeps the init of the projections it adds), then fastai's fine-tuning: one epoch on the head, the
rest unfrozen. The checkpoint is checked against every arm before any run; its digest is part of the study's recipe."""
import hashlib, warnings
from functools import partial
from pathlib import Path

__all__ = ['warm_digest', 'warm_arch', 'check_warm']


def warm_digest(file) -> str:
    "'sha256:' and the first 16 hex digits of `file`'s SHA-256: a study's runs must all start from the same bytes."
    h = hashlib.sha256()
    with open(file, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''): h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


def warm_arch(arch, file:str):
    "`arch` that loads `file` whenever fastai builds it (fastai hands a file to no arch, only torchvision's names)."
    import torch
    from fastai.vision.learner import model_meta
    from ..model.weights import read_checkpoint
    sd = read_checkpoint(file)
    first = sd.get('conv1.weight')
    if first is not None and first.shape[1] not in (1, 3):
        raise ValueError(f"`warm` {str(file)!r}: its first conv takes {first.shape[1]} input channels; the study's "
                         f"images are grey: pass a checkpoint for 1 or 3 channels")
    if first is not None and first.shape[1] == 1:
        # fastai builds the arch for 3 channels and sums them into its 1: zeros beside the file's make that sum exact
        sd = {**sd, 'conv1.weight': torch.cat([first, first.new_zeros(first.shape).repeat(1, 2, 1, 1)], 1)}
    warm = partial(arch, weights=sd)
    # without 'weights' in its meta fastai calls `warm(pretrained=True)`, so no default weights replace the file
    model_meta[warm] = {k: v for k, v in model_meta[arch].items() if k != 'weights'}
    return warm


def check_warm(arch_name:str, arms:list, file:str) -> list:
    "Build each arm from `file` once (a file that fits none is refused now, naming it); one note a fold > 1 arm."
    from ..integration.fastai_meta import resnetx_arch
    from ..model.weights import CheckpointError
    notes = []
    for arm in arms:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # the missing projections' warning: said once here, in the notes
            try: model = warm_arch(resnetx_arch(arch_name, **arm.overrides()), file)()
            except CheckpointError as e:
                raise CheckpointError(f"`warm` checkpoint {str(file)!r} cannot start {arm.name}: {e}") from None
        if model.new_keys:
            shortcuts = list(dict.fromkeys(k.rsplit('.', 2)[0] for k in model.new_keys))
            notes.append(f"warm start: in {arm.name} {len(model.new_keys)} tensors of {len(shortcuts)} projections "
                         f"have no counterpart in {Path(file).name} and keep their init ({', '.join(shortcuts)})")
    return notes
