"`Learner.summary` with a FLOPs column (patched in by integration/patches.py): fastai's table, FLOPs per module call."
import torch
from fastcore.basics import PrettyString
from fastai.learner import Learner
from fastai.callback.hook import total_params, module_summary
from fastai.torch_core import find_bs, apply

from ..inspection.flops import CONVENTION, model_summary, _human, _one_line, _check_device, _LeftAsFound

__all__ = ['learner_table', 'model_inputs']

_WIDTH = 88

def _shape_line(shape, bs):
    "fastai's way to show an output shape: the batch size first, ` x ` between dims"
    if shape is None: return ''
    if shape and not isinstance(shape[0], int): shape = shape[0]  # several outputs: show the first, as fastai does
    return ' x '.join([str(bs), *map(str, shape[1:])])

def _rows(summary):
    "fastai's rows (leaf modules, here one per call), plus the ops a parent runs itself when they count FLOPs"
    for r in summary.rows:
        if r.is_leaf: yield r, r.flops
        elif r.self_flops: yield r, r.self_flops

def learner_table(summary, bs=1, model_name=None):
    "fastai's `module_summary` table of `summary` (a `ModelSummary`) with a FLOPs column and totals"
    inp = ', '.join(_shape_line(s, bs) for s in summary.input_size)
    res = f"{model_name or summary.model_name} (Input shape: {inp})\n" + "=" * _WIDTH + "\n"
    res += f"{'Layer (type)':<20} {'Output Shape':<20} {'Param #':<10} {'Trainable':<10} {'FLOPs':<10}\n" + "=" * _WIDTH
    prev = None
    for j, (r, flops) in enumerate(_rows(summary)):
        shape = _shape_line(r.output_shape, bs)[:19]
        if j == 0: res += f'\n{"":<20} {shape:<20}'
        elif r.output_shape != prev and r.input_shape != r.output_shape:
            res += "\n" + "_" * _WIDTH + "\n" + f'{"":<20} {shape:<20}'
        params, trainable = total_params(r.module) if r.is_leaf and hasattr(r.module, 'weight') else ('', '')
        typ = r.module_type + (f' #{r.call+1}' if r.call else '') + ('' if r.is_leaf else ' ops')
        res += f"\n{typ:<20} {'':<20} {params:<10} {str(trainable):<10} {_human(flops):<10}"
        prev = r.output_shape
    res += "\n" + "_" * _WIDTH + "\n"
    res += f"\nTotal params: {summary.total_params:,}\n"
    res += f"Total trainable params: {summary.trainable_params:,}\n"
    res += f"Total non-trainable params: {summary.total_params - summary.trainable_params:,}\n"
    res += f"Total FLOPs per item: {_human(summary.total_flops)} ({summary.total_flops:,}), "
    res += f"MACs: {_human(summary.total_macs)} ({summary.total_macs:,})\n"
    why = f" (meta could not run it: {summary.fallback})" if summary.fallback else ''
    res += f"{CONVENTION}; counted on {summary.device}{why} by torch.utils.flop_counter.FlopCounterMode\n\n"
    return res

def model_inputs(learn, xb=None) -> list:
    "The tensors `learn.model` gets for the first item of a training batch: after batch transforms and callbacks"
    # As fastai's `layer_info`: one item through the learner's own loop (callbacks that only train removed), in eval
    # mode; a pre-hook records what reaches the model, so a callback that changes the batch (channels, dtype) is seen.
    # The model is left as found (fastai's validation loop would leave it in eval mode).
    xb = learn.dls.train.one_batch()[:getattr(learn.dls.train, 'n_inp', 1)] if xb is None else xb
    seen = []
    def _record(module, args, kwargs):
        if not seen: seen.append((args, kwargs))
    handle = learn.model.register_forward_pre_hook(_record, with_kwargs=True)
    train_only = [cb for cb in learn.cbs if hasattr(cb, '_only_train_loop')]
    try:
        with _LeftAsFound(learn.model), learn.removed_cbs(train_only), learn.no_logging(), learn.no_bar(), learn as l:
            l.get_preds(dl=[apply(lambda o: o[:1], xb)], inner=True, reorder=False)
    finally: handle.remove()
    args, kwargs = seen[0]
    if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError(f'the model is called with {[type(a).__name__ for a in args]} and keywords {list(kwargs)}: '
                        'FLOPs are counted for models called with tensors only')
    return [a.detach() for a in args]

def _footer(learn):
    "fastai's lines after the table: optimizer, loss function, frozen state, callbacks"
    res = f"Optimizer used: {learn.opt_func}\nLoss function: {learn.loss_func}\n\n"
    if learn.opt is not None:
        res += "Model " + ("unfrozen\n\n" if learn.opt.frozen_idx == 0
                           else f"frozen up to parameter group #{learn.opt.frozen_idx}\n\n")
    return res + "Callbacks:\n" + '\n'.join(f"  - {cb}" for cb in learn.cbs.sorted('order'))

def summary_with_flops(self: Learner, device='meta'):
    "fastai's summary of the model, optimizer and loss function, plus the FLOPs of every layer call and in total"
    # `Learner.summary` calls this (integration/patches.py). Counted on `meta` where it can run (else on the model's
    # device, see `model_summary`), on what the model really gets; if counting fails, fastai's own table, with the
    # reason the FLOPs are missing.
    _check_device(device)
    xb = self.dls.train.one_batch()[:getattr(self.dls.train, 'n_inp', 1)]
    inputs = model_inputs(self, xb)   # a model that fails here fails in fastai's summary too
    try: res = learner_table(model_summary(self.model, inputs=inputs, device=device), find_bs(xb),
                             type(self.model).__name__)
    except Exception as e:
        res = module_summary(self, *xb) + f"FLOPs not counted: {_one_line(e)}\n\n"
    return PrettyString(res + _footer(self))
