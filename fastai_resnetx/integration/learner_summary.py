"`Learner.summary` with a FLOPs column: fastai's table and footer, exact FLOPs counted for every module call."
from fastcore.basics import patch, PrettyString
from fastai.learner import Learner
from fastai.callback.hook import total_params
from fastai.torch_core import find_bs

from ..inspection.flops import CONVENTION, model_summary, _human

__all__ = ['learner_table']

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
    res += f"{CONVENTION}; counted on {summary.device} by torch.utils.flop_counter.FlopCounterMode\n\n"
    return res

@patch
def summary(self: Learner, device='meta'):
    "Print fastai's summary of the model, optimizer and loss function, plus the FLOPs of every layer call and in total"
    xb = self.dls.train.one_batch()[:getattr(self.dls.train, 'n_inp', 1)]
    bs = find_bs(xb)
    # FLOPs per item: count on the first item of the batch, as fastai does for its shapes
    ms = model_summary(self.model, inputs=[x[:1] for x in xb], device=device)
    res = learner_table(ms, bs, type(self.model).__name__)
    res += f"Optimizer used: {self.opt_func}\nLoss function: {self.loss_func}\n\n"
    if self.opt is not None:
        res += "Model " + ("unfrozen\n\n" if self.opt.frozen_idx == 0 else f"frozen up to parameter group #{self.opt.frozen_idx}\n\n")
    res += "Callbacks:\n" + '\n'.join(f"  - {cb}" for cb in self.cbs.sorted('order'))
    return PrettyString(res)
