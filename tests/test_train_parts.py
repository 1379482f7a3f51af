"`fastai_resnetx.job.train`'s parts, in process and small: settings, arch names, batch size, disk, recipe, outputs."
import json, shutil, time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from PIL import Image
from fastai.vision.all import ProgressCallback, Resize, load_learner, PILImageBW

import fastai_resnetx.job.train as job
from fastai_resnetx.job.train import (TrainSettings, TRAIN_DEFAULTS, IDX_DEFAULTS, resolve_arch, fit_batch_size,
                                      check_disk_space, StopOnNonFinite, fit_recipe, fused_adamw, train)
from fastai_resnetx.job.idx_data import load_idx_data
from fastai_resnetx.integration.fastai_meta import folded_arch
from fastai_resnetx.model.archs import resnetx18
from resnetx_cli.runs import MARKER, OutputFolder
from test_idx_data import write_idx_set

OUTPUTS = ['confusion_matrix.png', 'export.pkl', 'loss.png', 'metrics.json']


@pytest.mark.parametrize('kw, words', [
    (dict(epochs=0), "`epochs` must be an integer >= 1, got 0"), (dict(epochs=2.), "`epochs` must be an integer >= 1, got 2.0"),
    (dict(size=7), "`size` must be an integer >= 8, got 7"), (dict(size=16.), "`size` must be an integer >= 8, got 16.0"),
    (dict(bs=1), "`bs` must be an integer >= 2, got 1"), (dict(bs=8.), "`bs` must be an integer >= 2, got 8.0"),
    (dict(seed=-1), "`seed` must be an integer >= 0, got -1"), (dict(seed=1.), "`seed` must be an integer >= 0, got 1.0"),
    (dict(fold=0), "`fold` must be an integer >= 1, got 0"), (dict(fold=2.), "`fold` must be an integer >= 1, got 2.0"),
    (dict(lr=0.), "`lr` must be a number in (0, 10), got 0.0"), (dict(lr=10), "`lr` must be a number in (0, 10), got 10"),
    (dict(lr=10.5), "`lr` must be a number in (0, 10), got 10.5"), (dict(lr='1'), "`lr` must be a number in (0, 10), got '1'"),
    (dict(precision='fp16'), "`precision` must be one of ['fp32', 'bf16', None], got 'fp16'")])
def test_every_setting_is_refused_word_for_word(kw, words):
    with pytest.raises(ValueError) as e: TrainSettings(**kw).checked()
    assert str(e.value) == words


def test_the_smallest_allowed_settings_pass():
    s = TrainSettings(epochs=1, size=8, bs=2, seed=0, fold=1, lr=1e-9, precision='bf16').checked()
    assert (s.epochs, s.size, s.bs, s.seed, s.fold, s.lr, s.precision) == (1, 8, 2, 0, 1, 1e-9, 'bf16')
    assert TrainSettings(lr=9.999).checked().lr == 9.999


def test_unset_settings_are_the_datas_defaults(monkeypatch):
    monkeypatch.setattr(job, 'pick_precision', lambda arch, size: f'{arch} at {size}')   # which arch and size it asks
    digits = dict(arch='resnetx18', fold=2, epochs=10, size=24, bs=64, lr=4e-3, seed=42, pretrained=False)
    assert vars(TrainSettings().checked()) == {**digits, 'precision': 'resnetx18 at 24'} and TRAIN_DEFAULTS.items() <= digits.items()
    idx = dict(arch='resnetx_small', fold=1, epochs=5, size=28, bs=256, lr=1e-2, seed=42, pretrained=False)
    assert vars(TrainSettings().checked(IDX_DEFAULTS, native_size=28)) == {**idx, 'precision': 'resnetx_small at 28'}
    s = TrainSettings(fold=3, size=28, precision='fp32').checked(IDX_DEFAULTS, native_size=28)
    assert (s.fold, s.precision) == (3, 'fp32')
    assert TrainSettings(arch='resnet18').checked().fold is None                   # not a ResNetX: no default fold
    with pytest.raises(ValueError) as e: TrainSettings(size=32).checked(IDX_DEFAULTS, native_size=28)
    assert str(e.value) == "`size` 32: an idx data set is used at its own size, 28 px"


def test_arch_names_resolve_to_the_arch_at_the_fold():
    assert resolve_arch('resnetx18') is resnetx18 and resolve_arch('resnetx18', 3).keywords == {'fold': 3}
    assert resolve_arch('folded_resnet18') is folded_arch('folded_resnet18') and folded_arch('folded_resnet18').keywords['fold'] == 1
    assert resolve_arch('folded_resnet18', 3).keywords['fold'] == 3
    assert resolve_arch('resnet18') is torchvision.models.resnet18 and resolve_arch('resnet18', 1) is torchvision.models.resnet18
    for name, fold, folded in [('resnet18', 2, 'folded_tv_resnet18'), ('timm/resnet18', 2, 'folded_resnet18'),
                               ('resnet10t', 3, 'folded_resnet10t')]:
        arch = resolve_arch(name, fold)
        assert (arch.func.__name__, arch.keywords['fold']) == (folded, fold)
    with pytest.raises(ValueError) as e: resolve_arch('convnext_tiny', 2)
    assert str(e.value).startswith("`fold` only applies to ResNetX archs (['resnetx101', ") and str(e.value).endswith(
        "and to timm's and torchvision's ResNets (folded: timm.list_models('folded_*')), not to 'convnext_tiny'")


def test_batch_size_is_cut_to_the_training_images_per_process(monkeypatch):
    assert fit_batch_size(64, 65) == (64, None) and fit_batch_size(64, 64) == (64, None) and fit_batch_size(2, 2) == (2, None)
    assert fit_batch_size(64, 40) == (40, "note: `bs` 64 is more than the 40 training images; using bs 40")
    with pytest.raises(ValueError) as e: fit_batch_size(64, 1)
    assert str(e.value) == "1 training images are too few for 1 processes: each needs at least 2 (BatchNorm)"
    monkeypatch.setattr(job, 'num_distrib', lambda: 2)                          # under torchrun, 2 processes
    bs, note = fit_batch_size(64, 11)
    assert (bs, type(bs), note) == (5, int, "note: `bs` 64 is more than the 5 training images per process; using bs 5")
    with pytest.raises(ValueError) as e: fit_batch_size(64, 3)
    assert str(e.value) == "3 training images are too few for 2 processes: each needs at least 2 (BatchNorm)"


def test_disk_space_is_the_models_bytes_and_four_mib(tmp_path, monkeypatch):
    model = nn.Linear(1, 1_550_001, bias=False)                                 # 1.550001M parameters: 6,200,004 bytes
    need, asked = 6_200_004 + 4 * 2**20, []
    def disk(free): return lambda path: (asked.append(path), SimpleNamespace(free=free))[1]
    out = tmp_path / 'a' / 'b'
    monkeypatch.setattr(shutil, 'disk_usage', disk(need))
    check_disk_space(model, out)                                                # exactly enough
    assert asked == [tmp_path]                                                  # the disk `out` will be made on
    monkeypatch.setattr(shutil, 'disk_usage', disk(need - 1))
    with pytest.raises(ValueError) as e: check_disk_space(model, out)
    assert str(e.value) == (f"`--out` {str(out)!r}: the outputs need about 9.9 MiB (export.pkl of a 1.6M-parameter "
                            f"model), 9.9 MiB are free on its disk")


def test_a_non_finite_training_loss_stops_naming_epoch_and_batch():
    cb = StopOnNonFinite()
    def after(loss, training=True):
        cb.learn = SimpleNamespace(loss=torch.tensor([loss, 1.]), training=training, epoch=1, iter=2)
        cb.after_loss()
    after(3.)
    after(float('nan'), training=False)                                         # validation: not this callback's
    for bad in ('nan', 'inf'):
        with pytest.raises(ValueError) as e: after(float(bad))
        assert str(e.value) == (f"the training loss became {bad} at epoch 2, batch 3: try a smaller --lr or check the "
                                f"data and starting weights; no outputs were written")


class Calls:
    "A stand-in learner that records the fit methods called on it."
    def __init__(self): self.calls = []
    def __getattr__(self, name): return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


@pytest.mark.parametrize('epochs, pretrained, calls', [
    (5, False, [('fit_one_cycle', (5, 0.01), {})]),
    (1, True, [('fit_one_cycle', (1, slice(0.01)), {'pct_start': 0.99})]),    # the frozen epoch alone
    (4, True, [('fine_tune', (3,), {'base_lr': 0.01, 'freeze_epochs': 1})])])  # one frozen, three unfrozen
def test_the_recipe_from_scratch_and_pretrained(epochs, pretrained, calls):
    learn = Calls()
    fit_recipe(learn, epochs, 0.01, pretrained)
    assert learn.calls == calls
    if not pretrained:                                                          # from scratch is the default
        fit_recipe(learn, epochs, 0.01)
        assert learn.calls == calls * 2


def test_the_optimiser_is_torchs_fused_adamw():
    w = nn.Parameter(torch.ones(3))
    opt = fused_adamw([w], lr=0.5)
    assert type(opt.opt) is torch.optim.AdamW and opt.opt.defaults['fused'] is True and opt.opt.param_groups[0]['lr'] == 0.5


def recomputed(learn) -> tuple:
    "(mean cross-entropy, accuracy, predicted, actual) of `learn`'s model on its validation set, by hand."
    model, logits, ys = learn.model.eval(), [], []
    with torch.no_grad():
        for xb, yb in learn.dls.valid:
            logits.append(model(xb).float().as_subclass(torch.Tensor)); ys.append(yb.as_subclass(torch.Tensor))
    logits, ys = torch.cat(logits), torch.cat(ys)
    return float(F.cross_entropy(logits, ys)), float((logits.argmax(1) == ys).float().mean()), logits.argmax(1), ys


def png_dpi(path) -> tuple:
    with Image.open(path) as im: return im.format, tuple(round(d) for d in im.info['dpi'])


def test_a_small_run_in_process_writes_what_it_measured(tmp_path, capsys, monkeypatch):
    from fastai_resnetx.inspection.arch_summary import arch_summary
    from fastai_resnetx.inspection.flops import model_summary
    plotted, real_plot = [], job.plot_confusion_matrix
    monkeypatch.setattr(job, 'plot_confusion_matrix', lambda *a: (plotted.append(a), real_plot(*a))[1])
    out, t0 = tmp_path / 'out', time.time()
    m = train(n_items=40, epochs=2, size=8, bs=8, arch='resnetx_small', fold=2, precision='fp32', out=out)
    wall, learn, printed = time.time() - t0, m.pop('learner'), capsys.readouterr().out
    fit_s = m.pop('fit_seconds')
    assert 0 < fit_s < wall and type(fit_s) is float and fit_s == round(fit_s, 2)
    assert m == dict(arch='resnetx_small', fold=2, epochs=2, size=8, bs=8, lr=4e-3, pretrained=False, precision='fp32',
                     seed=42, data='digits', n_train=32, validation='held-out split', n_valid=8,
                     params=sum(p.numel() for p in learn.model.parameters()), rank=0, valid_loss=m['valid_loss'],
                     valid_accuracy=m['valid_accuracy'])
    loss, acc, predicted, actual = recomputed(learn)
    assert m['valid_loss'] == pytest.approx(loss, rel=1e-5) and m['valid_accuracy'] == pytest.approx(acc)
    (shown, true, vocab), = plotted
    assert torch.equal(shown, predicted) and torch.equal(true, actual) and vocab == learn.dls.vocab
    rec = learn.recorder                      # the training's history: 4 steps an epoch, `iters` at each epoch's end
    assert [len(rec.values), len(rec.losses), len(rec.lrs), rec.iters] == [2, 8, 8, [4, 8]]
    assert str(arch_summary(learn.model[0])) in printed
    assert str(model_summary(learn.model, input_size=(1, 3, 8, 8), max_depth=2)) in printed
    head = '  '.join(f'{n:>10}' for n in ('epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'))
    table = printed[printed.index(head):].splitlines()
    assert printed.count(head) == 1 and len(table) == 3 and table[0] == head
    for i, line in enumerate(table[1:]):                                        # one line per epoch, 10 wide
        fields = line.split()
        assert fields[:4] == [str(i), *(f'{v:.6f}' for v in rec.values[i])] and line == '  '.join(f'{f:>10}' for f in fields)
    assert any(isinstance(cb, ProgressCallback) for cb in learn.cbs) and 'EpochLines' not in [type(c).__name__ for c in learn.cbs]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, *OUTPUTS]
    text, written = (out / 'metrics.json').read_text(), {k: v for k, v in m.items() if k != 'rank'}
    assert json.loads(text) == {**written, 'fit_seconds': fit_s} and text.startswith('{\n  "arch": "resnetx_small",\n')
    assert [png_dpi(out / n) for n in ('loss.png', 'confusion_matrix.png')] == [('PNG', (100, 100))] * 2
    loaded = load_learner(out / 'export.pkl')
    assert [t.size for t in loaded.dls.train.after_item.fs if isinstance(t, Resize)] == [(8, 8)]
    trained, exported = learn.model.state_dict(), loaded.model.state_dict()    # the model trained is the one exported
    assert trained.keys() == exported.keys() and all(torch.equal(trained[k], exported[k]) for k in trained)


def test_a_small_idx_run_is_grey_channels_last_and_exports_an_image_pipeline(tmp_path, capsys):
    data, out = tmp_path / 'idx', tmp_path / 'out'
    write_idx_set(data, n_train=24, n_test=8, size=(10, 10), n_classes=3)
    m = train(data=data, epochs=1, bs=8, out=out)
    learn, printed = m['learner'], capsys.readouterr().out
    assert printed.splitlines()[0] == f"data: {data} (24 training images; the 8 test images are the validation set)"
    assert (m['arch'], m['fold'], m['size'], m['bs'], m['lr'], m['validation'], m['n_train'], m['n_valid'], m['data']) == (
        'resnetx_small', 1, 10, 8, 1e-2, 'test set', 24, 8, str(data))
    from fastai.vision.all import MixedPrecision
    conv = next(m for m in learn.model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert learn.model[0][0].in_channels == 1 and conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)         # channels_last alone, fp32
    assert [mod.p for mod in learn.model[1].modules() if isinstance(mod, nn.Dropout)] in ([], [0., 0.])
    assert any(isinstance(cb, StopOnNonFinite) for cb in learn.cbs) and learn.opt.opt.defaults['fused'] is True
    loaded = load_learner(out / 'export.pkl')
    assert [t.size for t in loaded.dls.train.after_item.fs if isinstance(t, Resize)] == [(10, 10)]
    label, _, probs = loaded.predict(PILImageBW.create(Image.new('L', (20, 20), 128)))
    assert label in ('0', '1', '2') and probs.shape == (3,)


EARLIER = {'metrics.json': '{}', MARKER: '{"files": ["metrics.json"]}'}


def earlier_run(out):
    "Make `out` (an existing folder) an earlier run's folder: its metrics.json and the marker that run wrote."
    for name, text in EARLIER.items(): (out / name).write_text(text)


def test_where_a_stopped_run_was_and_what_it_kept(tmp_path):
    out = tmp_path / 'out'
    p = job._Progress(out)
    assert p.where() == f"while starting; nothing was written to {out} (it was not created)"
    out.mkdir()
    p.step = 'reading the data'
    assert p.where() == f"while reading the data; nothing was written to {out} (it is unchanged)"
    p.step, p.learn = 'training', SimpleNamespace(epoch=1, n_epoch=5)
    assert p.where() == f"while training (epoch 2 of 5); nothing was written to {out} (it is unchanged)"
    for learn in (None, SimpleNamespace(epoch=0, n_epoch=None), SimpleNamespace()):   # before fastai's fit began
        p.learn = learn
        assert p.where() == f"while training; nothing was written to {out} (it is unchanged)"
    p.step, p.learn = 'validating', SimpleNamespace(epoch=4, n_epoch=5)
    earlier_run(out)
    assert p.where() == f"while validating; nothing was written to {out} (its earlier run's outputs are kept, unchanged)"
    p.folder = SimpleNamespace(committed=False)
    assert p.where().startswith('while validating;')
    p.step = 'done'
    assert p.where() == f'after writing all outputs to {out}'
    p.step, p.folder = 'writing outputs', SimpleNamespace(committed=True)      # a signal that waited for the renames
    assert p.where() == f'after writing all outputs to {out}'


def test_a_stop_while_writing_keeps_the_earlier_run_and_says_so(tmp_path, monkeypatch):
    out = tmp_path / 'out'
    out.mkdir()
    earlier_run(out)
    monkeypatch.setattr(job, 'plot_confusion_matrix', fail_with(KeyboardInterrupt()))   # after export.pkl, loss.png
    with pytest.raises(KeyboardInterrupt) as e: train(n_items=40, epochs=1, size=8, bs=8, arch='resnetx_small', out=out, show=False)
    assert e.value.kept == f"while writing outputs; nothing was written to {out} (its earlier run's outputs are kept, unchanged)"
    assert {p.name: p.read_text() for p in out.iterdir()} == EARLIER            # no new output, no temporary file


def fail_with(error):
    def fail(*args, **kwargs): raise error
    return fail


@pytest.mark.parametrize('name, where, error, reason', [
    ('loss.png', '_save_loss_plot', OSError(28, 'No space left on device'), 'No space left on device'),
    ('loss.png', '_save_loss_plot', OSError('over quota'), 'over quota'),                 # no strerror: its text
    ('confusion_matrix.png', 'plot_confusion_matrix', ValueError('first line\nlast line\n'), 'last line'),
    ('confusion_matrix.png', 'plot_confusion_matrix', RuntimeError(' '), 'RuntimeError'),
    ('export.pkl', 'export', RuntimeError('[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed '
                                          'writing file data/0: file write failed'),
     'PytorchStreamWriter failed writing file data/0: file write failed')])
def test_a_failed_write_names_the_file_and_the_reason_and_writes_nothing(tmp_path, monkeypatch, name, where, error, reason):
    from fastai.learner import Learner
    monkeypatch.setattr(*((Learner, 'export') if where == 'export' else (job, where)), fail_with(error))
    out = tmp_path / 'out'
    out.mkdir()
    earlier_run(out)
    with pytest.raises(OSError) as e: train(n_items=40, epochs=1, size=8, bs=8, arch='resnetx_small', out=out, show=False)
    assert str(e.value) == (f"writing {name} to {out} failed ({reason}); no outputs were written, the folder's earlier "
                            f"files are kept")
    assert {p.name: p.read_text() for p in out.iterdir()} == EARLIER


def test_the_data_each_run_reads(tmp_path):
    write_idx_set(tmp_path / 'idx', n_train=24, n_test=8, size=(10, 10))
    idx, out = load_idx_data(tmp_path / 'idx'), tmp_path / 'out'
    def idx_dls(data, seed):
        s = TrainSettings(bs=8, seed=seed).checked(IDX_DEFAULTS, native_size=10)
        return job._dls(data, s, None, out, idx=idx)
    (dls, notes), (other, other_notes) = idx_dls('fashion-mnist', 1), idx_dls(tmp_path / 'idx', 1)
    said = f"data: {idx.source} (24 training images; the 8 test images are the validation set)"
    assert (dls.train.augment.flip, dls.bs, notes) == (True, 8, [said + '; augmentation: horizontal flip'])  # clothes flip
    assert (other.train.augment.flip, other_notes) == (False, [said])                                      # digits may not
    batches = [dl.one_batch()[1].tolist() for dl in (dls.train, other.train, idx_dls('fashion-mnist', 2)[0].train)]
    assert batches[0] == batches[1] != batches[2]                              # the seed orders the batches
    s = TrainSettings(bs=64, size=8).checked()
    dls, notes = job._dls(None, s, 40, out)                                    # 40 digits: 32 to train, 8 to validate
    assert (len(dls.train_ds), len(dls.valid_ds), dls.bs, dls.one_batch()[0].shape[-1]) == (32, 8, 32, 8)
    assert notes == ["note: `bs` 64 is more than the 32 training images; using bs 32"]
    s.seed = 7                                                                 # the split stays: the seed is not its
    assert dls.valid_ds.items == job._dls(None, s, 40, out)[0].valid_ds.items


class Stream:
    "A stdout that records what was written and each flush, as a log file's reader would see it."
    def __init__(self): self.events = []
    def write(self, s): self.events.append(s); return len(s)
    def flush(self): self.events.append(None)
    def isatty(self): return False


def test_a_log_file_gets_each_epoch_line_as_it_is_printed_and_no_figure_stays_open(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    stream = Stream()
    monkeypatch.setattr('sys.stdout', stream)
    m = train(n_items=40, epochs=2, size=8, bs=8, arch='resnetx_small', precision='fp32', out=tmp_path / 'out')
    head = '  '.join(f'{n:>10}' for n in ('epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'))
    at = stream.events.index(head)
    lines = [e for e in stream.events[at:] if e not in (None, '\n')]
    assert len(lines) == 3 and all(stream.events[stream.events.index(l) + 1:][:2] == ['\n', None] for l in lines)
    rec = m['learner'].recorder                                                 # one-cycle: from lr/25 up to lr, 4e-3
    assert rec.lrs[0] == pytest.approx(4e-3 / 25) and max(rec.lrs) == pytest.approx(4e-3)
    assert plt.get_fignums() == []


def test_a_stop_while_validating_or_a_non_finite_validation_loss(tmp_path, monkeypatch, capsys):
    from fastai.learner import Learner
    monkeypatch.setattr(job, '_evaluate', fail_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt) as e: train(n_items=40, epochs=1, size=8, bs=8, arch='resnetx_small', out=tmp_path / 'a', show=False)
    assert e.value.kept == f"while validating; nothing was written to {tmp_path / 'a'} (it was not created)"
    monkeypatch.undo()
    nan = lambda self, **kwargs: (torch.zeros(8, 10), torch.zeros(8, dtype=torch.long), torch.full((8,), float('nan')))
    monkeypatch.setattr(Learner, 'get_preds', nan)
    with pytest.raises(ValueError) as e: train(n_items=40, epochs=1, size=8, bs=8, arch='resnetx_small', out=tmp_path / 'b', show=False)
    assert str(e.value) == "the validation loss is nan (the model gives non-finite outputs): no outputs were written"
    assert not (tmp_path / 'b').exists() and capsys.readouterr().out == ''       # show=False: nothing printed


def test_pretrained_one_epoch_trains_the_head_alone_warming_up_all_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    url = torchvision.models.get_model_weights('resnet18')['DEFAULT'].url
    (tmp_path / 'torch' / 'hub' / 'checkpoints').mkdir(parents=True)
    weights = torchvision.models.resnet18().state_dict()
    torch.save(weights, tmp_path / 'torch' / 'hub' / 'checkpoints' / url.rsplit('/', 1)[1])
    m = train(n_items=40, epochs=1, size=32, bs=8, arch='resnet18', pretrained=True, out=tmp_path / 'out', show=False)
    body, lrs = m['learner'].model[0], m['learner'].recorder.lrs
    assert torch.equal(body[0].weight, weights['conv1.weight'])                # frozen: the stem is ImageNet's still
    assert lrs == sorted(lrs) and lrs[-1] < 4e-3                               # pct_start 0.99: rising all epoch
    assert len(m['learner'].recorder.values) == 1 and m['epochs'] == 1         # the head's epoch is the one epoch
    assert json.loads((tmp_path / 'out' / 'metrics.json').read_text())['epochs'] == 1


def test_an_image_folder_or_a_csv_of_labels_read_at_the_runs_size_and_split(tmp_path):
    from digit_folders import digit_folder
    data = digit_folder(tmp_path / 'data', layout='flat', n=10)                # 2 classes x 10: 2 of each held out
    out = data / '3' / 'run'                                                    # the run's folder, inside the data
    out.mkdir()
    Image.new('L', (16, 16)).save(out / 'image.png')                            # never read as a training image
    s = TrainSettings(bs=8, size=12).checked()
    dls, _ = job._dls(data, s, None, out)
    valid = sorted(str(p) for p in dls.valid_ds.items)
    assert (len(dls.train_ds), len(valid), dls.bs, dls.vocab) == (16, 4, 8, ['3', '7'])
    assert dls.one_batch()[0].shape == (8, 3, 12, 12)
    assert valid == sorted(str(p) for p in job._dls(data, s, None, out)[0].valid_ds.items)   # the split is fixed
    names = sorted(p.relative_to(data).as_posix() for p in data.glob('[37]/*.png'))
    (tmp_path / 'labels.csv').write_text('name,label\n' + ''.join(f"{n},{'three' if n[0] == '3' else 'seven'}\n" for n in names))
    dls, _ = job._dls(data, s, None, out, labels=tmp_path / 'labels.csv')
    valid = sorted(str(p) for p in dls.valid_ds.items)
    assert (len(dls.train_ds), len(valid), dls.vocab) == (16, 4, ['seven', 'three'])   # the CSV's labels
    assert valid == sorted(str(p) for p in job._dls(data, s, None, out, labels=tmp_path / 'labels.csv')[0].valid_ds.items)


def test_the_learner_takes_the_runs_precision_head_arguments_and_memory_check(monkeypatch):
    from fastai_resnetx.job.data import digits_dls
    from fastai_resnetx.integration.precision import BF16MixedPrecision
    import fastai_resnetx.job.arch_checks as checks
    dls, s = digits_dls(size=8, bs=8, n_items=40), TrainSettings(arch='resnetx_small', size=8, bs=8, precision='bf16').checked()
    arch = resolve_arch(s.arch, s.fold)
    learn = job._learner(dls, s, arch, {'lin_ftrs': [7]})
    assert any(isinstance(cb, BF16MixedPrecision) for cb in learn.cbs)
    assert [m.out_features for m in learn.model[1].modules() if isinstance(m, nn.Linear)] == [7, 10]
    assert [m.p for m in learn.model[1].modules() if isinstance(m, nn.Dropout)] == [0.25, 0.5]   # fastai's head for digits
    conv = next(m for m in learn.model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)    # channels_last is for idx data only
    monkeypatch.setattr(checks, 'available_memory', lambda device: 1000)        # bytes
    with pytest.raises(ValueError) as e: job._learner(dls, s, arch, {})
    assert str(e.value).startswith("`size` 8 with `bs` 8 needs at least 0.0 GiB for resnetx_small's activations, 0.0 GiB")


def test_channels_last_in_fp32_is_for_idx_data_alone(tmp_path):
    from fastai.vision.all import MixedPrecision, ChannelsLast
    from fastai_resnetx.job.data import digits_dls
    from fastai_resnetx.job.tensor_data import idx_dls
    write_idx_set(tmp_path / 'idx', n_train=24, n_test=8, size=(10, 10))
    arch = resolve_arch('resnetx_small')
    def conv_and_amp(dls):
        cbs = job.make_learner(dls, arch, precision='fp32').cbs              # channels_last is set as the fit begins
        return any(isinstance(c, ChannelsLast) for c in cbs), any(isinstance(c, MixedPrecision) for c in cbs)
    assert conv_and_amp(idx_dls(load_idx_data(tmp_path / 'idx'), bs=8)) == (True, False)     # no fp16 autocast with it
    assert conv_and_amp(digits_dls(size=8, bs=8, n_items=40)) == (False, False)
