"`resnetx train` end to end: exported learner on images of any size, outputs all or nothing, stops, logs, small cases."
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from fastai.vision.all import load_learner, PILImage, MixedPrecision, accuracy

from resnetx_cli import main
from fastai_resnetx.job.train import train
from fastai_resnetx.job.train import atomic_write, SPLIT_SEED
from resnetx_cli.runs import OutputFolder, MARKER, OUTPUTS
from digit_folders import digit_folder, error_lines, run_resnetx

RESNETX = Path(sys.executable).parent / 'resnetx'   # the console script: its start-up is the front door's


def outputs(out:Path) -> dict: return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def earlier_run(out:Path) -> dict:
    "A folder holding an earlier run's outputs (stand-in bytes) and the marker that run wrote; its contents."
    out.mkdir(parents=True)
    for name in ('export.pkl', 'loss.png', 'confusion_matrix.png', 'metrics.json'): (out / name).write_bytes(b'old ' + name.encode())
    (out / MARKER).write_text('{"files": ["export.pkl", "loss.png", "confusion_matrix.png", "metrics.json"]}')
    return outputs(out)


def no_temporaries(folder:Path):
    "No hidden file but run folders' markers anywhere under `folder` (no temporary file or folder, no lock)."
    return [p.name for p in folder.rglob('.*') if p.name != MARKER] == []


@pytest.mark.slow
def test_exported_learner_is_right_on_digits_of_any_size(tmp_path):
    "load_learner(export.pkl).predict on the validation digits rendered at 8x8, 64 and 224 px: validation accuracy +- 2 points."
    from sklearn.datasets import load_digits
    m = train(epochs=2, size=16, arch='resnetx_small', out=tmp_path / 'out', show=False)   # fold 2; 4x resnetx18's speed
    learn, digits = load_learner(tmp_path / 'out' / 'export.pkl'), load_digits()
    valid = list(m['learner'].dls.valid.items)
    assert len(valid) == m['n_valid'] == 359
    for px in (8, 64, 224):
        imgs = [Image.fromarray(np.uint8(np.round(digits.images[i] * 255 / 16))).resize((px, px), Image.BILINEAR) for i in valid]
        for i, img in zip(valid, imgs): img.save(tmp_path / f'{i}.png')
        preds = learn.get_preds(dl=learn.dls.test_dl([PILImage.create(tmp_path / f'{i}.png') for i in valid]))[0].argmax(1)
        acc = np.mean([learn.dls.vocab[p] == str(digits.target[i]) for p, i in zip(preds, valid)])
        print(f"predict on {len(valid)} validation digits at {px} px: {acc:.4f} (validation {m['valid_accuracy']:.4f})")
        assert abs(acc - m['valid_accuracy']) <= 0.02, (px, acc, m['valid_accuracy'])
        label, _, _ = learn.predict(PILImage.create(tmp_path / f'{valid[0]}.png'))   # predict: the same pipeline
        assert label == learn.dls.vocab[preds[0]]
    assert m['valid_accuracy'] > 0.8


@pytest.mark.slow
def test_runs_from_inside_the_data_folder_never_train_on_outputs(tmp_path, monkeypatch, capsys):
    data = digit_folder(tmp_path / 'data', layout='flat', n=10)
    monkeypatch.chdir(data)
    for run in range(2):                                                    # default --out runs/latest: inside the data
        assert main(['train', '--data', '.', '--epochs', '1', '--size', '16', '--bs', '8']) == 0
        metrics = json.loads((data / 'runs' / 'latest' / 'metrics.json').read_text())
        assert [metrics['n_train'], metrics['n_valid']] == [16, 4], run
    assert main(['train', '--data', '.', '--epochs', '1', '--size', '16', '--bs', '8', '--out', 'other']) == 0
    assert json.loads((data / 'other' / 'metrics.json').read_text())['n_train'] == 16   # runs/latest: an earlier run's
    assert len(load_learner(data / 'other' / 'export.pkl').dls.vocab) == 2
    assert 'no valid/ folder: 4 of 20 images (20.0%) are held out for validation, at random from each class (seed 42)' in capsys.readouterr().out


@pytest.mark.slow
def test_batch_larger_than_the_training_set_is_reduced_with_a_note(tmp_path, capsys):
    m = train(digit_folder(tmp_path / 'data'), epochs=1, size=16, bs=64, out=tmp_path / 'out', show=False)
    assert "note: `bs` 64 is more than the 18 training images; using bs 18" in capsys.readouterr().out
    assert m['bs'] == 18 and len(m['learner'].recorder.losses) == 1                 # one real step, not zero
    assert json.loads((tmp_path / 'out' / 'metrics.json').read_text())['bs'] == 18
    # the exported learner reads a file path (16-bit PNGs too) or a PILImage, at any size
    learn = load_learner(tmp_path / 'out' / 'export.pkl')
    img8 = np.asarray(Image.open(tmp_path / 'data' / 'valid' / '7' / '7_9.png').resize((64, 64), Image.BILINEAR))
    Image.fromarray(img8.astype(np.uint16) * 257).save(tmp_path / 'deep.png')
    by_path, by_image = learn.predict(tmp_path / 'deep.png'), learn.predict(PILImage(Image.fromarray(img8).convert('RGB')))
    assert by_path[0] == by_image[0] and torch.allclose(by_path[2], by_image[2], atol=1e-4)


def test_outputs_appear_together_or_not_at_all(tmp_path):
    out = tmp_path / 'out'
    old = earlier_run(out)
    (out / 'notes.md').write_text('mine')
    with pytest.raises(KeyboardInterrupt), OutputFolder(out) as folder:
        folder.temp('export.pkl').write_bytes(b'new')
        raise KeyboardInterrupt                                              # stopped half-way through writing
    assert outputs(out) == {**old, 'notes.md': b'mine'} and no_temporaries(tmp_path)
    with OutputFolder(out) as folder:
        folder.temp('export.pkl').write_bytes(b'new'); folder.temp('metrics.json').write_text('{}')
        folder.commit(['export.pkl', 'metrics.json'])
    new = outputs(out)
    assert (new['export.pkl'], new['metrics.json'], new['loss.png'], new['notes.md']) == (b'new', b'{}', old['loss.png'], b'mine')
    assert no_temporaries(tmp_path)
    with pytest.raises(KeyboardInterrupt), OutputFolder(tmp_path / 'a' / 'b') as folder:   # created for the run, nothing kept
        folder.temp('export.pkl').write_bytes(b'new'); raise KeyboardInterrupt
    assert not (tmp_path / 'a').exists()
    with pytest.raises(KeyboardInterrupt): atomic_write(tmp_path / 'one.png', lambda p: (p.write_bytes(b'half'), (_ for _ in ()).throw(KeyboardInterrupt())))
    assert not (tmp_path / 'one.png').exists() and no_temporaries(tmp_path)


@pytest.mark.slow
def test_sigterm_during_training_keeps_the_earlier_outputs(tmp_path):
    data, out = digit_folder(tmp_path / 'data', n=12), tmp_path / 'out'
    old = earlier_run(out)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([str(RESNETX), 'train', '--data', str(data), '--out', str(out), '--epochs', '200', '--size', '16',
                             '--bs', '4'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:                                                 # wait for the first epoch's line
        if re.match(r'\s+0\s+\d', line): break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and len(error_lines(err)) == 1, err
    assert re.fullmatch(rf"resnetx: terminated \(SIGTERM\) while training \(epoch \d+ of 200\); nothing was written to "
                        rf"{re.escape(str(out))} \(its earlier run's outputs are kept, unchanged\)", error_lines(err)[0]), err
    assert outputs(out) == old and no_temporaries(tmp_path)


STOPPED_IN_RENAMES = """
import os, sys, time
from pathlib import Path
ready, real = Path(sys.argv[1]), os.replace
def replace(src, dst, *a, **k):   # the first output's rename: say so, wait for the other process's signal, go on
    if Path(dst).name == 'export.pkl' and not ready.exists():
        ready.write_text(str(os.getpid()))
        time.sleep(3)
    return real(src, dst, *a, **k)
os.replace = replace
from resnetx_cli import main
sys.exit(main(sys.argv[2:]))
"""


def stopped_in_renames(script:str, ready:Path, argv:list) -> subprocess.Popen:
    "`resnetx *argv` started through `script`, once it waits in its renames (it wrote `ready`)."
    proc = subprocess.Popen([sys.executable, '-c', script, str(ready), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    for _ in range(1200):
        if ready.exists() or proc.poll() is not None: break
        time.sleep(0.1)
    assert ready.exists(), proc.communicate()[1][-2000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize('sig, code, how', [(signal.SIGTERM, 143, 'terminated \\(SIGTERM\\)'),
                                            (signal.SIGINT, 130, 'interrupted')])
def test_a_signal_inside_the_final_renames_waits_for_them(tmp_path, sig, code, how):
    "A real signal from another process between two renames: every output is the new run's, and the message says so."
    data, out, ready = digit_folder(tmp_path / 'data', n=6), tmp_path / 'out', tmp_path / 'ready'
    old = earlier_run(out)
    argv = ['train', '--data', str(data), '--out', str(out), '--epochs', '1', '--size', '16', '--bs', '4',
            '--precision', 'fp32']
    proc = stopped_in_renames(STOPPED_IN_RENAMES, ready, argv)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and len(error_lines(err)) == 1, err
    assert re.fullmatch(rf"resnetx: {how} after writing all outputs to {re.escape(str(out))}", error_lines(err)[0]), err
    new = outputs(out)
    assert sorted(new) == sorted(old) and all(new[n] != old[n] for n in old if n != MARKER)   # all new, none old
    assert json.loads(new['metrics.json'])['n_train'] > 0 and no_temporaries(tmp_path)


@pytest.mark.slow
def test_resnetx_train_killed_inside_its_renames_then_run_again(tmp_path):
    "The real command SIGKILLed by another process between two renames: the next run says so and writes one set."
    data, out, ready = digit_folder(tmp_path / 'data', n=6), tmp_path / 'out', tmp_path / 'ready'
    old = earlier_run(out)
    argv = ['train', '--data', str(data), '--out', str(out), '--epochs', '1', '--size', '16', '--bs', '4',
            '--precision', 'fp32']
    after_first = STOPPED_IN_RENAMES.replace('    return real(src, dst, *a, **k)\n', '').replace(
        '    if Path(dst).name', '    real(src, dst, *a, **k)\n    if Path(dst).name')   # waits after the rename
    proc = stopped_in_renames(after_first, ready, argv)
    proc.kill()
    proc.communicate(timeout=60)
    killed = outputs(out)
    assert killed['export.pkl'] != old['export.pkl'] and killed['metrics.json'] == old['metrics.json']   # mixed
    r = run_resnetx(*argv)
    assert r.returncode == 0, r.stderr
    assert re.search(r"note: an earlier run into .* was killed while putting its outputs in place; its remaining "
                     r"outputs \(loss.png, confusion_matrix.png, metrics.json\) are now in place", r.stdout), r.stdout
    assert json.loads((out / 'metrics.json').read_text())['n_train'] > 0 and no_temporaries(tmp_path)
    assert 'switching' not in json.loads((out / MARKER).read_text())


KILLED_AT = """
import os, signal, sys
from pathlib import Path
from resnetx_cli.runs import OutputFolder, MARKER
out, at, real = Path(sys.argv[1]), sys.argv[2], os.replace
def replace(src, dst, *a, **k):   # SIGKILL itself (what no handler can catch) right after the rename named `at`
    real(src, dst, *a, **k)
    if Path(dst).name == at and (at != MARKER or 'switching' not in Path(dst).read_text()):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
with OutputFolder(out) as folder:
    for n in ('export.pkl', 'loss.png', 'confusion_matrix.png', 'metrics.json'):
        folder.write_text(n, 'new ' + n)
        if at == 'writing' and n == 'loss.png': os.kill(os.getpid(), signal.SIGKILL)
    folder.commit(['export.pkl', 'loss.png', 'confusion_matrix.png', 'metrics.json'])
"""


@pytest.mark.parametrize('at, mixed, finished', [
    ('writing', False, []),                                           # killed before the switch: the old set stays
    ('export.pkl', True, ['loss.png', 'confusion_matrix.png', 'metrics.json']),   # after the first rename: mixed
    ('metrics.json', False, []),                                      # after the last rename, before the marker
    (MARKER, False, [])])                                             # after everything
def test_a_run_killed_between_its_renames_is_finished_by_the_next(tmp_path, at, mixed, finished):
    "SIGKILL (no handler runs) at each step of the switch: the next run into the folder finds one run's outputs."
    out = tmp_path / 'out'
    with OutputFolder(out) as folder:                                 # the earlier run, committed in this process
        for n in OUTPUTS: folder.write_text(n, 'old ' + n)
        folder.commit(OUTPUTS)
    old = outputs(out)
    assert json.loads(old[MARKER]) == {'written_by': 'resnetx train', 'files': sorted(OUTPUTS), 'rule':
        'resnetx train replaces only the files listed here; anything else in this folder is never touched'}
    r = subprocess.run([sys.executable, '-c', KILLED_AT, str(out), at], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    kinds = {outputs(out)[n][:3] for n in old if n != MARKER}
    assert (kinds == {b'old', b'new'}) == mixed, kinds            # the kill really landed between the renames
    with OutputFolder(out) as folder: assert folder.finished == finished
    note = folder.finished_note()
    assert (note is not None) == mixed
    assert not mixed or note == (f"note: an earlier run into {out} was killed while putting its outputs in place; its "
                                 f"remaining outputs ({', '.join(finished)}) are now in place, so the folder held one "
                                 f"run's outputs again before this run began")
    now, want = outputs(out), (b'old' if at == 'writing' else b'new')
    assert {now[n][:3] for n in old if n != MARKER} == {want}, now   # one run's outputs, whole
    assert 'switching' not in json.loads(now[MARKER]) and no_temporaries(tmp_path)


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    proc = subprocess.Popen([str(RESNETX), 'train', '--out', str(tmp_path / 'out')], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)                                                          # importing torch and fastai takes seconds
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and error_lines(err) == ['resnetx: interrupted during start-up; nothing was written'], err
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_log_to_a_file_one_line_per_epoch_and_the_process_clock(tmp_path):
    data, out = digit_folder(tmp_path / 'data'), tmp_path / 'out'
    t0 = time.time()
    res = run_resnetx('train', '--data', data, '--epochs', '2', '--size', '16', '--bs', '4', '--out', out, '--precision', 'fp32')
    elapsed = time.time() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    assert '\r' not in res.stdout and 'Stage' in res.stdout and 'FLOPs' in res.stdout
    table = res.stdout[res.stdout.index('epoch  train_loss'):].splitlines()
    assert table[0].split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time']
    assert [l.split()[0] for l in table[1:3]] == ['0', '1'] and table[3].startswith('final validation accuracy')
    assert len(table) == 4
    wall = float(re.search(r'wall clock ([\d.]+) s', res.stdout).group(1))
    # the process's clock, start-up included: the imports alone are most of `elapsed` (a clock started after them
    # reads under a third of it); forking a large test worker can take seconds of it on a busy machine
    assert 0.5 * elapsed < wall <= elapsed
    metrics = json.loads((out / 'metrics.json').read_text())
    assert [metrics['n_train'], metrics['n_valid'], metrics['precision']] == [18, 6, 'fp32']   # train/ and valid/ honoured


@pytest.mark.slow
def test_bf16_run_reports_the_accuracy_the_exported_learner_gets(tmp_path):
    "Trained in bf16, the exported learner predicts in fp32: the accuracy in metrics.json is the exported learner's."
    m = train(n_items=240, epochs=1, size=16, bs=32, precision='bf16', out=tmp_path, show=False)
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    learn = load_learner(tmp_path / 'export.pkl')
    assert metrics['precision'] == 'bf16' and not any(isinstance(c, MixedPrecision) for c in learn.cbs)
    preds, targs, losses = learn.get_preds(dl=learn.dls.test_dl(m['learner'].dls.valid_ds.items, with_labels=True), with_loss=True)
    assert preds.dtype == torch.float32 and float(accuracy(preds, targs)) == pytest.approx(metrics['valid_accuracy'], abs=1e-6)
    assert float(losses.mean()) == pytest.approx(metrics['valid_loss'], rel=1e-5)   # a bf16 evaluation differs in the 3rd digit
