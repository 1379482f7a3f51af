"Mixed precision on CPU: bf16 really runs inside the forward, loss and grads stay fp32, and a tiny digits fit trains."
import math, os, warnings

import pytest
import torch
from torch import nn
from fastai.vision.all import vision_learner, accuracy, first, set_seed, Callback, ShortEpochCallback, MixedPrecision
from fastai_resnetx import resnetx18, resnetx_small, BF16MixedPrecision, BF16_TRAIN_SPEEDUP, pick_precision, apply_precision, NonFiniteGradientsError
from fastai_resnetx.integration import precision
from fastai_resnetx.job.data import digits_dls


def tiny_learner(n_items=100, size=24, bs=16, arch=resnetx18):   # 24 px: the last stride-2 conv sees 2x2 (16 px: 1x1, below)
    dls = digits_dls(size=size, bs=bs, n_items=n_items, augment=False, device='cpu')
    return vision_learner(dls, arch, pretrained=False, metrics=accuracy)


class DtypeRecorder(Callback):
    "Records what a fit really computed in: a conv's output dtype and input layout, the pred, loss and grad dtypes."
    order = 50  # after MixedPrecision's hooks (order 10)
    def before_fit(self):
        self.conv_out, self.conv_cl, self.pred, self.loss, self.grads = set(), set(), set(), set(), set()
        conv = first(m for m in self.model.modules() if isinstance(m, nn.Conv2d))
        self.hook = conv.register_forward_hook(self.record)
    def record(self, m, inp, out):
        self.conv_out.add(out.dtype)
        self.conv_cl.add(inp[0].is_contiguous(memory_format=torch.channels_last) and not inp[0].is_contiguous())
    def after_loss(self): self.pred.add(self.learn.pred.dtype); self.loss.add(self.learn.loss_grad.dtype)
    def after_backward(self): self.grads |= {p.grad.dtype for p in self.model.parameters() if p.grad is not None}
    def after_fit(self): self.hook.remove()


def fit_recorded(learn, train=True):
    "One train batch and one valid batch (or, `train=False`, `validate` on one batch), recorded."
    rec = DtypeRecorder()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the emulated-bf16 warning, tested on its own below
        if train: learn.fit(1, 1e-3, cbs=[rec, ShortEpochCallback(pct=0.01)])
        else: learn.validate(cbs=[rec, ShortEpochCallback(pct=0.01)])
    return rec


def test_to_bf16_on_cpu_adds_the_device_following_callback():
    learn = tiny_learner()
    assert torch.device(learn.dls.device).type == 'cpu'
    learn.to_bf16().to_bf16()  # twice: still one mixed-precision callback
    mp = [cb for cb in learn.cbs if isinstance(cb, MixedPrecision)]
    assert len(mp) == 1 and type(mp[0]) is BF16MixedPrecision and learn.mixed_precision is mp[0]
    learn.to_fp32()  # fastai's own to_fp32 removes it: it is a MixedPrecision
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs) and not hasattr(learn, 'mixed_precision')


def test_bf16_runs_the_convs_in_bf16_and_keeps_loss_and_grads_fp32():
    learn = tiny_learner().to_bf16()
    rec = fit_recorded(learn)
    assert rec.conv_out == {torch.bfloat16}  # inside the forward, train and valid batches alike
    assert rec.conv_cl == {True}  # channels_last on CPU by default
    assert rec.pred == {torch.float32} and rec.loss == {torch.float32} and rec.grads == {torch.float32}
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())  # fp32 master weights, no copies
    conv = first(m for m in learn.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous()  # the model is left in the layout it came in
    assert learn.scaler is None  # MixedPrecision's after_fit cleaned up; the scaler was a disabled pass-through


def test_fp32_and_channels_last_off():
    learn = tiny_learner()
    rec = fit_recorded(learn)
    assert rec.conv_out == {torch.float32} and rec.conv_cl == {False} and rec.grads == {torch.float32}
    rec = fit_recorded(learn.to_bf16(channels_last=False), train=False)  # validate: bf16 in NCHW is slow on AVX2
    assert rec.conv_out == {torch.bfloat16} and rec.conv_cl == {False}
    rec = fit_recorded(learn.to_fp32(), train=False)
    assert rec.conv_out == {torch.float32}


def test_emulated_bf16_warns(monkeypatch):
    learn = tiny_learner()
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-no-bf16')
    with pytest.warns(UserWarning) as record:
        learn.to_bf16().validate(cbs=ShortEpochCallback(pct=0.01))
    assert [str(w.message) for w in record if 'emulated' in str(w.message)] == [
        "bf16 on a CPU without avx512_bf16/amx_bf16 runs emulated: training measured 5-10x slower than fp32 "
        "(bench/throughput_results.md); `learn.to_fp32()` goes back"]
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-amx')
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*emulated')
        learn.validate(cbs=ShortEpochCallback(pct=0.01))


@pytest.mark.slow
def test_tiny_digits_fit_in_bf16_learns():
    set_seed(0)
    learn = tiny_learner(n_items=400, bs=16, arch=resnetx_small).to_bf16()  # 20 batches of the small-image arch
    with warnings.catch_warnings(), learn.no_bar(), learn.no_logging():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(1, 1e-2)
    acc = learn.validate()[1]
    assert acc > 0.4, f'accuracy {acc:.3f} after 1 bf16 epoch (chance is 0.1; 0.60-0.70 over seeds 0-3 here)'


def _poison(value, where):
    "A grad hook putting `value` into one element (flat index `where`) of the gradient, the rest left as computed."
    def hook(g):
        g = g.clone(memory_format=torch.contiguous_format)  # channels_last grads under to_bf16: view(-1) needs contiguous
        g.view(-1)[where] = value
        return g
    return hook


@pytest.mark.parametrize('value,where', [(float('nan'), None), (float('nan'), -1), (float('inf'), 0), (float('-inf'), -1)])
def test_bf16_stops_before_a_non_finite_gradient_reaches_the_weights(value, where):
    "A NaN (what torch's bf16 conv backward on CPU gives a stride-2 conv on a 1x1 map) or an inf, in the whole gradient or "
    "in one element of it, stops the fit before the optimizer step: every weight as it was."
    learn = tiny_learner(n_items=64).to_bf16()
    p = learn.model[0][4][0].branch.conv1.weight                # stage1, unit 1, first conv
    before = {n: w.detach().clone() for n, w in learn.model.named_parameters()}
    p.register_hook((lambda g: g * value) if where is None else _poison(value, where))
    with warnings.catch_warnings(), learn.no_bar(), learn.no_logging(), pytest.raises(NonFiniteGradientsError, match=r"NaN/inf gradients in 1 parameter\(s\) \(first: 0\.4\.0\.branch\.conv1\.weight\)"):
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-3)
    assert all(torch.equal(w.detach(), before[n]) for n, w in learn.model.named_parameters())
    assert torch.isfinite(p).all()


def test_non_finite_check_agrees_with_a_per_element_scan():
    "The one-sum-per-grad check names exactly the parameters a plain element-by-element scan finds, false alarms included."
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 30), nn.Linear(30, 2))
    names = [n for n, _ in model.named_parameters()]
    cases = [{}, {0: [float('nan')]}, {1: [float('inf')]}, {2: [float('-inf')]}, {3: [float('inf'), float('-inf')]},
             {0: [float('nan')], 5: [float('inf')]}, {4: [3e38, 3e38]}]  # the last: finite, but its sum overflows
    for case in cases:
        for i, p in enumerate(model.parameters()):
            p.grad = torch.randn_like(p)
            for j, v in enumerate(case.get(i, [])): p.grad.view(-1)[-1 - j] = v
        expected = [n for n, p in zip(names, model.parameters())
                    if any(not math.isfinite(v) for v in p.grad.flatten().tolist())]
        assert precision._non_finite(model) == expected, case
    model[1].weight.grad = None  # a parameter without a gradient is skipped
    assert precision._non_finite(model) == [] and precision._non_finite(nn.Linear(2, 2)) == []


def test_pick_precision_reads_the_table(monkeypatch):
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-amx')
    assert pick_precision('resnetx50', 64, 'cpu') == 'bf16'
    assert pick_precision('resnetx50', 224, 'cpu') == 'bf16'  # nearest measured size of the same arch
    assert pick_precision('resnetx18', 24, 'cpu') == 'fp32'  # tiny inputs: bf16 measured slower
    assert pick_precision('resnet50', 28, 'cpu') == 'fp32'  # unmeasured arch: nearest size of any arch
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-avx512-bf16')
    assert pick_precision('resnetx18', 24, 'cpu') == 'bf16'  # the digits run: 1.20x measured on an EPYC with avx512_bf16
    assert pick_precision('resnetx18', 16, 'cpu') == 'fp32'  # a 1x1 map into a stride-2 conv: NaN grads in bf16 on CPU
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-intel-avx512-bf16')
    assert pick_precision('resnetx18', 24, 'cpu') == 'fp32'  # the same instructions on a Xeon without AMX: 0.90x measured
    assert pick_precision('resnetx50', 64, 'cpu') == 'fp32'
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-no-bf16')
    assert pick_precision('resnetx50', 128, 'cpu') == 'fp32'
    assert pick_precision('resnetx50', 128, 'meta') == 'fp32'
    for kind, table in BF16_TRAIN_SPEEDUP.items():
        for (arch, size), ratio in table.items():
            monkeypatch.setattr(precision, '_cpu_kind', lambda: kind)
            if kind.startswith('cpu'): assert pick_precision(arch, size, 'cpu') == ('bf16' if ratio >= 1.05 else 'fp32')
    with pytest.raises(ValueError, match='`size`.*0'): pick_precision('resnetx18', 0)


def test_apply_precision():
    learn = tiny_learner()
    n = len(learn.cbs)
    assert apply_precision(learn, 'fp32') is learn and len(learn.cbs) == n
    assert isinstance(apply_precision(learn, 'bf16').mixed_precision, BF16MixedPrecision)
    with pytest.raises(ValueError, match=r"`precision`.*'fp32', 'bf16'.*'fp16'"): apply_precision(learn, 'fp16')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_on_cuda_it_is_fastais_bf16_autocast():
    learn = tiny_learner()
    learn.dls.to('cuda')
    rec = fit_recorded(learn.to_bf16())
    assert rec.conv_out == {torch.bfloat16} and rec.conv_cl == {False} and rec.grads == {torch.float32}


def test_no_fastai_name_is_replaced():
    import fastai.vision.all as fastai_all
    assert not set(precision.__all__) & set(dir(fastai_all))
    assert 'to_bf16' not in precision.__all__  # `Learner.to_bf16` is patched; fastai's names stay fastai's


def _one_by_one_learner():
    "A stride-2 conv on a 1x1 map (a ResNet's last stage at 16 px): torch 2.14's CPU bf16 backward leaves NaN in its grad."
    from fastai.vision.all import Learner, DataLoaders, DataLoader, CrossEntropyLossFlat
    torch.manual_seed(0)
    ds = list(zip(torch.randn(128, 64, 1, 1), torch.randint(0, 2, (128,))))
    dls = DataLoaders(DataLoader(ds, bs=32, shuffle=True), DataLoader(ds, bs=32), device='cpu')
    model = nn.Sequential(nn.Conv2d(64, 128, 3, 2, 1, bias=False), nn.Flatten(), nn.Linear(128, 2))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat())


def test_bf16_never_leaves_non_finite_weights_on_a_1x1_map():
    # either the fit stops (the weights never took the NaN) or, where torch computes it right, every weight is finite
    learn = _one_by_one_learner().to_bf16()
    with warnings.catch_warnings(), learn.no_bar(), learn.no_logging():
        warnings.simplefilter('ignore')
        try: learn.fit(3, 1e-3)
        except NonFiniteGradientsError as e: print('stopped:', str(e).splitlines()[-1].strip()[:120])
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


@pytest.mark.parametrize('amx,bf16,vendor,kind', [
    (True, True, 'GenuineIntel', 'cpu-amx'), (False, True, 'GenuineIntel', 'cpu-intel-avx512-bf16'),
    (False, True, 'AuthenticAMD', 'cpu-avx512-bf16'), (False, False, 'GenuineIntel', 'cpu-no-bf16'),
    (False, False, 'AuthenticAMD', 'cpu-no-bf16')])
def test_cpu_kind_from_flags_and_vendor(monkeypatch, amx, bf16, vendor, kind):
    "Which row of the measured table a CPU reads: AMX first, then avx512_bf16 by vendor (they measured opposite)."
    monkeypatch.setattr(precision, '_cpu_flag', lambda name: {'amx_tile': amx, 'avx512_bf16': bf16}[name])
    monkeypatch.setattr(precision, '_cpu_vendor', lambda: vendor)
    precision._cpu_kind.cache_clear()
    try: assert precision._cpu_kind() == kind
    finally: precision._cpu_kind.cache_clear()


def test_cpu_flags_are_torchs_probes_and_agree_with_the_kernel(monkeypatch):
    monkeypatch.setattr(torch.cpu, '_is_fake_supported', lambda: 1, raising=False)
    assert precision._cpu_flag('fake') is True                                   # a bool, whatever the probe returns
    def broken(): raise RuntimeError('no probe here')
    monkeypatch.setattr(torch.cpu, '_is_fake_supported', broken)
    assert precision._cpu_flag('fake') is False and precision._cpu_flag('no_such_flag') is False
    try: flags = next(l for l in open('/proc/cpuinfo') if l.startswith('flags')).split()
    except (OSError, StopIteration): pytest.skip('no /proc/cpuinfo flags here')
    for name in ('avx512_bf16', 'amx_tile'):                                    # torch's probe against the kernel's list
        assert precision._cpu_flag(name) == (name in flags), name


def test_cpu_vendor_from_a_cpuinfo_file(tmp_path):
    (tmp_path / 'intel').write_text('processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\nprocessor\t: 1\n'
                                    'vendor_id\t: GenuineIntel\n')
    (tmp_path / 'arm').write_text('processor\t: 0\nBogoMIPS\t: 50.00\nvendor_idea: no\n')
    (tmp_path / 'colons').write_text('bugs\t: a:b:c\nvendor_id\t: Some:Vendor\n')       # the value keeps its colons
    assert precision._cpu_vendor(tmp_path / 'colons') == 'Some:Vendor'
    assert precision._cpu_vendor(tmp_path / 'intel') == 'GenuineIntel'
    assert precision._cpu_vendor(tmp_path / 'arm') == ''                         # no vendor_id line (an ARM board)
    assert precision._cpu_vendor(tmp_path / 'none') == ''                        # no such file (not Linux)
    import platform
    if os.path.exists('/proc/cpuinfo') and platform.machine() in ('x86_64', 'AMD64'):   # the default: the kernel's file
        assert precision._cpu_vendor() == precision._cpu_vendor('/proc/cpuinfo') in ('GenuineIntel', 'AuthenticAMD')


def test_machine_kind_by_device(monkeypatch):
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-x')
    assert precision.machine_kind('cpu') == precision.machine_kind() == 'cpu-x'   # fastai's default device: the CPU
    assert precision.machine_kind('meta') == 'meta' and precision.machine_kind(torch.device('meta')) == 'meta'


def test_pick_precision_rule_on_a_hand_table(monkeypatch):
    "The rule, on a table made up for the test: this arch's nearest measured size (in log scale), else any arch's."
    monkeypatch.setattr(precision, '_cpu_kind', lambda: 'cpu-x')
    monkeypatch.setitem(BF16_TRAIN_SPEEDUP, 'cpu-x', {('a', 32): 1.5, ('a', 128): 0.9, ('b', 64): 1.05, ('b', 16): 2.0})
    pick = lambda arch, size, device='cpu': pick_precision(arch, size, device)
    assert pick('a', 32) == 'bf16' and pick('a', 128) == 'fp32'
    assert pick('a', 100) == 'fp32'          # |log(100/128)| = 0.25 < |log(100/32)| = 1.14
    assert pick('a', 60) == 'bf16'           # 0.63 (32) < 0.76 (128)
    assert pick('a', 70) == 'fp32'           # its own rows only: 128 (0.60), not b's 64 (0.09)
    assert pick('c', 70) == 'bf16'           # an unmeasured arch: any arch's nearest, b at 64: 1.05, the threshold
    assert pick('b', 17) == 'bf16' and pick('b', 16) == 'fp32'   # 16 px and less: fp32 whatever the table says
    assert pick('a', 32, 'meta') == 'fp32'   # another device: its own (here empty) row
    assert pick('a', 1) == 'fp32'
    with pytest.raises(ValueError) as e: pick('a', 0)
    assert str(e.value) == "`size` must be an integer >= 1 (px), got 0"


def test_the_sums_check_by_hand():
    assert precision._grads_finite([torch.ones(3), torch.zeros(2, 2)]) is True
    assert precision._grads_finite([torch.ones(3), torch.tensor([1., float('nan')])]) is False
    assert precision._grads_finite([]) is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA: grads on two devices')
def test_the_sums_check_on_two_devices():
    grads = [torch.ones(3), torch.ones(3, device='cuda'), torch.tensor([float('inf')], device='cuda')]
    assert precision._grads_finite(grads[:2]) is True and precision._grads_finite(grads) is False


def test_a_fit_cancelled_before_it_starts_leaves_the_model_as_it_was():
    "fastai still calls after_fit when an earlier callback cancels in before_fit: nothing of bf16 ran, nothing undone."
    from fastai.vision.all import CancelFitException
    class Cancel(Callback):
        order = 0
        def before_fit(self): raise CancelFitException
    learn = tiny_learner().to_bf16()
    learn.model.to(memory_format=torch.channels_last)                             # the user's own choice
    conv = first(m for m in learn.model.modules() if isinstance(m, nn.Conv2d))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=Cancel())
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def test_inside_a_bf16_fit_no_loss_scaling_and_a_channels_last_model():
    "bf16 has fp32's range: the scaler is a disabled pass-through; on CPU the model's convs are channels_last in the fit."
    class Seen(Callback):
        order = 50
        def before_batch(self):
            conv = first(m for m in self.model.modules() if isinstance(m, nn.Conv2d))
            self.scaling, self.cl = self.learn.scaler.is_enabled(), conv.weight.is_contiguous(
                memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    seen = Seen()
    learn = tiny_learner().to_bf16()
    with warnings.catch_warnings(), learn.no_bar(), learn.no_logging():
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-3, cbs=[seen, ShortEpochCallback(pct=0.01)])
    assert seen.scaling is False and seen.cl is True


def test_only_image_batches_become_channels_last():
    "A batch may carry other inputs beside the images (a mask, a vector, a name): they pass unchanged."
    cb = BF16MixedPrecision()
    learn = tiny_learner()
    cb.learn, cb.use_cl, cb.autocast = learn, True, torch.autocast('cpu', dtype=torch.bfloat16)
    img, vec = torch.randn(2, 3, 4, 4), torch.randn(2)
    learn.xb = (img, vec, 'name')
    cb.before_batch()
    assert learn.xb[0].is_contiguous(memory_format=torch.channels_last) and not learn.xb[0].is_contiguous()
    assert learn.xb[1] is vec and learn.xb[2] == 'name'
    cb.autocast.__exit__(None, None, None)   # MixedPrecision's before_batch entered it
