"""Mixed precision that really runs on CPU: bf16 autocast on the learner's own device, channels_last, and the
measured choice between fp32 and bf16 for `resnetx train --precision`.

fastai's `MixedPrecision` enters `autocast('cuda')`; on a CPU learner torch disables it with a warning and training
silently stays fp32. `BF16MixedPrecision` is `MixedPrecision(amp_mode='bf16')` whose autocast follows the device the
model is on (so on CUDA it does exactly what fastai's does), and `Learner.to_bf16` adds it instead of fastai's.
"""
import math, warnings
from functools import lru_cache

import torch
from fastcore.basics import patch
from fastai.learner import Learner
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.torch_core import default_device

from ..checks import check_int

__all__ = ['BF16MixedPrecision', 'NonFiniteGradientsError', 'machine_kind', 'BF16_TRAIN_SPEEDUP', 'pick_precision',
           'apply_precision', 'PRECISIONS']

PRECISIONS = ('fp32', 'bf16')


def _cpu_flag(name:str) -> bool:
    "torch's private CPU probe `torch.cpu._is_<name>_supported()`; False where it is absent (older torch) or fails."
    try: return bool(getattr(torch.cpu, f'_is_{name}_supported')())
    except Exception: return False


def _cpu_vendor(cpuinfo:str='/proc/cpuinfo') -> str:
    "The CPU's vendor id from /proc/cpuinfo ('GenuineIntel', 'AuthenticAMD'), '' where there is none."
    try:
        with open(cpuinfo) as f:
            fields = (line.split(':', 1) for line in f if ':' in line)
            return next((value.strip() for key, value in fields if key.strip() == 'vendor_id'), '')
    except OSError: return ''


@lru_cache(None)
def _cpu_kind() -> str:
    if _cpu_flag('amx_tile') and _cpu_flag('avx512_bf16'): return 'cpu-amx'
    # the same instructions, measured on both: bf16 1.2-1.5x faster on an AMD EPYC, 0.87x on an Intel Xeon without AMX
    if _cpu_flag('avx512_bf16'):
        return 'cpu-intel-avx512-bf16' if _cpu_vendor() == 'GenuineIntel' else 'cpu-avx512-bf16'
    return 'cpu-no-bf16'


def machine_kind(device=None) -> str:
    "The CPU's bf16 kind: 'cpu-amx', 'cpu-avx512-bf16', 'cpu-intel-avx512-bf16', 'cpu-no-bf16'; else the device type."
    device = torch.device(default_device() if device is None else device)
    return _cpu_kind() if device.type == 'cpu' else device.type


class NonFiniteGradientsError(ValueError):
    "bf16 training produced NaN/inf gradients: stopped before the optimizer step wrote them into the weights."


def _grads_finite(grads) -> bool:
    "True when the sums of `grads` are all finite, which they are whenever every element is (one read of each grad)."
    # A NaN or an inf anywhere makes its grad's sum NaN or inf, so a finite total proves every element finite. The
    # converse fails only when finite values overflow the sum (|sum| > 3e38): a false alarm `_non_finite` then clears.
    # One `sum` per grad and one `isfinite` per device: ~9 ms on resnetx50's 25.6M grads on a 2-core Xeon, where a
    # per-parameter `isfinite().all()` (a bool copy of every grad, then a sync per parameter) took ~50-70 ms.
    by_dev = {}
    for g in grads: by_dev.setdefault(g.device, []).append(g.sum())
    return all(bool(torch.stack(sums).isfinite().all()) for sums in by_dev.values())


def _non_finite(model) -> list:
    "Names of `model`'s parameters whose gradient holds a NaN or an inf."
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if _grads_finite([g for _, g in named]): return []
    return [n for n, g in named if not bool(g.isfinite().all())]  # the rare failing path: find the culprits exactly


class BF16MixedPrecision(MixedPrecision):
    """bf16 autocast on the learner's device (CPU too), optionally channels_last; on CUDA, `MixedPrecision('bf16')`.
    No loss scaling: bf16 has fp32's 8-bit exponent (same range), so gradients do not underflow as they do in fp16."""
    def __init__(self, channels_last:bool=None):
        "`channels_last` None: on CPU only, where oneDNN's bf16 convolutions want it."
        super().__init__(amp_mode=AMPMode.BF16)
        self.channels_last = channels_last

    @property
    def name(self): return 'mixed_precision'  # fastai looks for `learn.mixed_precision` (load_learner, to_channelslast)

    def before_fit(self):
        # TrainEvalCallback (order -10) has moved the model to dls.device; a fit always has parameters (its optimizer)
        self.device = next(self.model.parameters()).device
        if self.device.type == 'cuda': super().before_fit()
        else:
            if self.device.type == 'cpu' and _cpu_kind() == 'cpu-no-bf16':
                warnings.warn("bf16 on a CPU without avx512_bf16/amx_bf16 runs emulated: training measured 5-10x "
                              "slower than fp32 (bench/throughput_results.md); `learn.to_fp32()` goes back")
            # the disabled GradScaler passes loss and step straight through, so MixedPrecision's hooks run unchanged
            self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
            self.learn.scaler, self.scales = torch.amp.GradScaler(self.device.type, enabled=False), []
        self.use_cl = self.device.type == 'cpu' if self.channels_last is None else self.channels_last
        if self.use_cl: self.model.to(memory_format=torch.channels_last)

    def before_batch(self):
        if self.use_cl:
            self.learn.xb = tuple(x.contiguous(memory_format=torch.channels_last) if torch.is_tensor(x) and x.ndim == 4
                                  else x for x in self.xb)
        super().before_batch()

    def before_step(self):
        # fastai's own check is GradScaler's, which bf16 leaves disabled. On CPU, torch 2.14's bf16 convolution backward
        # leaves NaN in the weight gradient of a stride-2 conv whose input is 1x1 (padding-only taps; fp32 does not):
        # a silent NaN in the weights, seen only later in single-image predictions. Stop instead.
        if self.device.type == 'cpu' and (bad := _non_finite(self.model)):
            raise NonFiniteGradientsError(
                f"bf16 training on CPU produced NaN/inf gradients in {len(bad)} parameter(s) (first: {bad[0]}); "
                f"the weights were not updated. torch's bf16 convolution backward on CPU does this when a stride-2 "
                f"conv sees a 1x1 feature map (a ResNet at 16 px or less): train in fp32 (`--precision fp32`, "
                f"`learn.to_fp32()`) or larger")
        super().before_step()

    def after_fit(self):
        if getattr(self, 'use_cl', False): self.model.to(memory_format=torch.contiguous_format)  # leave it as found
        super().after_fit()


@patch
def to_bf16(self:Learner, channels_last:bool=None):
    "bf16 mixed precision on the learner's device, CPU included (fastai's own only autocasts on CUDA)"
    self.remove_cb(MixedPrecision)
    return self.add_cb(BF16MixedPrecision(channels_last=channels_last))


# bf16/fp32 ratio of training images/s (> 1: bf16 faster), per machine kind, for (arch, image size in px); bf16 with
# channels_last, as `BF16MixedPrecision` runs it on CPU. Median of per-round paired ratios from bench/throughput.py.
# 'cpu-amx': measured 2026-11 on a 2-core Xeon with AVX-512 and AMX bf16 (resnetx50 bs 16 at 64 px: 1.42x fold 1,
#   1.51x fold 2; resnetx18 at 24-32 px about 1/1.05-1/1.1); to be replaced by the quiet run
#   (bench/throughput.py docstring).
#   (A later 2-core Xeon showed no AMX to torch, oneDNN or lscpu; still unmeasured on real AMX.)
# 'cpu-avx512-bf16': ours, 2-core AMD EPYC with avx512_bf16 (no AMX), quiet machine, 9-15 rounds (bench/cpu_bf16_*.md,
#   2026-11-27): resnetx18 fold 2 at 24 px bs 64 (the digits run) 1.20x (ratio of medians 1.13x, IQR 23%); resnetx50
#   fold 1 bs 16 at 64 px 1.50x, bs 8 at 128 px 1.90x. The digits run end to end: bf16 36.0 s, 99.50% (5 seeds);
#   fp32 36.3 s, 99.33%.
# 'cpu-intel-avx512-bf16': a 2-core Intel Xeon with avx512_bf16 whose AMX torch, oneDNN and lscpu do not see, quiet
#   machine, 2 threads, 15 rounds, 2026-12-01: resnetx18 fold 2 at 24 px bs 64 (the digits run) 0.90x paired (IQR 9%,
#   bench/cpu_bf16_digits_xeon.md); resnetx50 fold 1 bs 16 at 64 px 0.87x with the NaN/inf check, 0.89x without
#   (bench/fold_cost_quiet.md). Same instructions as the EPYC, opposite answer: bf16 is slower here, so fp32.
# 'cpu-no-bf16': ours, 2-core AMD EPYC (AVX2, no avx512_bf16/amx_bf16: oneDNN falls back to slow_conv2d in bf16),
#   `--threads 1 --clock process` smoke on a busy machine (2-3 rounds; bench/throughput_results.md, 2026-11-23):
#   resnetx18 fold 2 at 24 px bs 64 0.21x; resnetx50 fold 1 at 64 px bs 16 0.12x, at 128 px bs 8 0.10x.
# No CUDA row yet: unmeasured kinds get fp32 (what fastai does by default); `--precision bf16` is always available.
BF16_TRAIN_SPEEDUP = {
    'cpu-amx': {('resnetx18', 24): 0.93, ('resnetx18', 32): 0.93, ('resnetx50', 64): 1.42},
    'cpu-avx512-bf16': {('resnetx18', 24): 1.20, ('resnetx50', 64): 1.50, ('resnetx50', 128): 1.90},
    'cpu-intel-avx512-bf16': {('resnetx18', 24): 0.90, ('resnetx50', 64): 0.87},
    'cpu-no-bf16': {('resnetx18', 24): 0.21, ('resnetx50', 64): 0.12, ('resnetx50', 128): 0.10},
}
BF16_MIN_GAIN = 1.05  # below this the measured gain is within a shared machine's noise: keep fp32
# At 16 px and less a ResNet's last stride-2 conv sees a 1x1 map, where torch's bf16 conv backward on CPU writes NaN
# into the weight gradient (see `BF16MixedPrecision.before_step`): fp32 there, whatever the table says.
BF16_MIN_SIZE = 17


def pick_precision(arch:str, size:int, device=None) -> str:
    "The faster of 'fp32' and 'bf16' for training `arch` at `size` px on this kind of machine (fp32 where unmeasured)."
    check_int('size', size, 1, also='px')
    if size < BF16_MIN_SIZE: return 'fp32'
    table = BF16_TRAIN_SPEEDUP.get(machine_kind(device), {})
    rows = {k: v for k, v in table.items() if k[0] == arch} or table  # another arch: the nearest size of any arch
    if not rows: return 'fp32'
    (_, _), ratio = min(rows.items(), key=lambda kv: abs(math.log(size / kv[0][1])))
    return 'bf16' if ratio >= BF16_MIN_GAIN else 'fp32'


def apply_precision(learn:Learner, precision:str) -> Learner:
    "Set `learn` to `precision`: 'bf16' adds `BF16MixedPrecision`, 'fp32' leaves it as it is."
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {list(PRECISIONS)}, got {precision!r}")
    return learn.to_bf16() if precision == 'bf16' else learn
