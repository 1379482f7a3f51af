"""`resnetx train --out`: a run never destroys what it did not write, checks before training what it can, and every
failure after training starts is one line with the earlier outputs intact. Through the real command."""
import errno, json, os, re, shlex, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from PIL import Image

from resnetx_cli import main
from resnetx_cli.runs import MARKER, written_files
from digit_folders import digit_folder, error_lines, run_resnetx

FAST = ('--epochs', '1', '--size', '16', '--bs', '4', '--precision', 'fp32')
OUTPUTS = ['confusion_matrix.png', 'export.pkl', 'loss.png', 'metrics.json']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}


def command(*args) -> list: return [sys.executable, '-m', 'fastai_resnetx', 'train', *map(str, args)]


def tree(folder:Path) -> dict:
    "Every file under `folder` (relative path: bytes)."
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def hidden_left(folder:Path) -> list:
    "Hidden files or folders under `folder` other than run markers: temporary outputs, locks, probes."
    return [str(p) for p in folder.rglob('.*') if p.name != MARKER]


def one_line(capsys, argv, code=2) -> str:
    "The command's only stderr line (exit `code`) for `argv`, run in this process."
    got = main(argv)
    err = error_lines(capsys.readouterr().err)
    assert got == code and len(err) == 1, (got, err)
    return err[0]


@pytest.fixture
def data(tmp_path): return digit_folder(tmp_path / 'data', n=8)   # real digits: train/ 6 + valid/ 2 per class


# ---- 1. a folder the tool did not mark is never written into, let alone replaced

def test_users_folder_with_export_pkl_and_metrics_json_is_refused_untouched(tmp_path, data, capsys):
    project = tmp_path / 'project'
    for rel, text in (('export.pkl', 'my fastai learner'), ('metrics.json', '{"mine": 1}'), ('src/model.py', 'x = 1'),
                      ('.git/HEAD', 'ref: refs/heads/main')):
        (project / rel).parent.mkdir(parents=True, exist_ok=True); (project / rel).write_text(text)
    before = tree(project)
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(project), *FAST])
    assert "holds files `resnetx train` did not write ('.git', 'export.pkl', 'metrics.json', 'src')" in line, line
    assert tree(project) == before and hidden_left(project) == [str(project / '.git')]


def test_a_marker_that_is_not_the_tools_does_not_make_a_run_folder(tmp_path, capsys, data):
    out = tmp_path / 'out'
    out.mkdir(); (out / MARKER).write_text('{"files": ["export.pkl", "../../etc/passwd"]}'); (out / 'a.txt').write_text('x')
    assert written_files(out) is None
    assert "did not write ('.resnetx-run.json', 'a.txt'" in one_line(capsys, ['train', '--data', str(data), '--out', str(out), *FAST])



def test_an_output_name_the_marker_does_not_list_is_refused_untouched(tmp_path, capsys, data):
    "In a run folder, only the files its marker lists are the tool's: a user's own loss.png there is not replaced."
    out = tmp_path / 'out'
    out.mkdir(); (out / MARKER).write_text('{"files": ["export.pkl", "metrics.json"]}'); (out / 'loss.png').write_text('mine')
    before = tree(out)
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(out), *FAST])
    assert "'loss.png' is not a file the earlier run wrote" in line, line
    assert tree(out) == before

@pytest.mark.slow
def test_run_folder_keeps_the_users_files_long_names_dot_closed_stdout_broken_pipe(tmp_path, data):
    "First run: a 250-byte --out name, stdout closed (`>&-`); user files added; second run `--out .` piped to `head -1`."
    out = tmp_path / ('r' * 250)
    first = subprocess.run(['bash', '-c', shlex.join(command('--data', data, '--out', out, *FAST)) + ' >&-'],
                           capture_output=True, text=True, env=ENV, timeout=600)
    assert first.returncode == 0 and error_lines(first.stderr) == [], first.stderr[-3000:]
    assert sorted(os.listdir(out)) == sorted([MARKER, *OUTPUTS]) and written_files(out) == OUTPUTS
    (out / 'notes.md').write_text('my notes'); (out / 'analysis').mkdir(); (out / 'analysis' / 'plot.png').write_bytes(b'png')
    first_export = (out / 'export.pkl').read_bytes()
    second = subprocess.run(['bash', '-c', shlex.join(command('--data', data, '--out', '.', *FAST, '--seed', '1'))
                             + ' | head -1; exit ${PIPESTATUS[0]}'], capture_output=True, text=True, env=ENV, cwd=out, timeout=600)
    assert second.returncode == 0 and error_lines(second.stderr) == [], second.stderr[-3000:]
    assert len(second.stdout.splitlines()) == 1                               # head -1 took one line and left
    assert (out / 'notes.md').read_text() == 'my notes' and (out / 'analysis' / 'plot.png').read_bytes() == b'png'
    assert (out / 'export.pkl').read_bytes() != first_export and json.loads((out / 'metrics.json').read_text())['seed'] == 1
    assert hidden_left(tmp_path) == []


def test_version():
    res = subprocess.run([Path(sys.executable).parent / 'resnetx', '--version'], capture_output=True, text=True, timeout=120)
    from importlib.metadata import version
    assert res.returncode == 0 and res.stdout.strip() == f"resnetx (fastai_resnetx) {version('fastai_resnetx')}"


# ---- 2, 6. checked before training: mount points, names, disk space, a second run

def test_name_too_long_for_the_file_system_refused_before_training(tmp_path, data, capsys):
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(tmp_path / ('r' * 300) / 'x'), *FAST])
    assert "is 300 bytes long, the file system allows 255" in line and os.listdir(tmp_path) == ['data']


@pytest.mark.slow
def test_mount_point_out_is_written_in_place(tmp_path, data, monkeypatch, capsys):
    "A mount point cannot be renamed (EBUSY): the run writes its files in it, each through a temporary file."
    out = tmp_path / 'volume'
    out.mkdir()
    rename, replace = os.rename, os.replace
    def busy(f):
        def call(src, dst, *a, **k):
            if Path(src) == out or Path(dst) == out: raise OSError(errno.EBUSY, 'Device or resource busy', str(src))
            return f(src, dst, *a, **k)
        return call
    monkeypatch.setattr(os, 'rename', busy(rename)); monkeypatch.setattr(os, 'replace', busy(replace))
    assert main(['train', '--data', str(data), '--out', str(out), *FAST]) == 0, capsys.readouterr().err
    assert sorted(os.listdir(out)) == sorted([MARKER, *OUTPUTS]) and hidden_left(tmp_path) == []
    assert json.loads((out / 'metrics.json').read_text())['n_train'] == 12


def test_not_enough_disk_space_refused_before_training(tmp_path, data, monkeypatch, capsys):
    import shutil
    usage = shutil.disk_usage
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: usage(p)._replace(free=10 * 2**20))   # 10 MiB free
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(tmp_path / 'out'), *FAST])
    # resnetx18's fp32 tensors alone are ~45 MiB
    assert re.search(r"the outputs need about 4\d\.\d MiB \(export\.pkl of a 11\.\dM-parameter model\), 10\.0 MiB are free", line), line
    assert 'epoch' not in capsys.readouterr().out and os.listdir(tmp_path) == ['data']


@pytest.mark.slow
def test_second_run_into_the_same_out_is_refused_at_once_and_sighup_is_one_line(tmp_path, data):
    out = tmp_path / 'out'
    first = subprocess.Popen(command('--data', data, '--out', out, '--epochs', '1000', '--size', '16', '--bs', '4'),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        for line in first.stdout:                                            # wait for the first epoch's line
            if re.match(r'\s+0\s+\d', line): break
        t0 = time.time()
        second = run_resnetx('train', '--data', data, '--out', out, *FAST)
        assert second.returncode == 2 and error_lines(second.stderr) == [
            f"resnetx train: error: `--out` {str(out)!r} is being written by another run (process {first.pid}): "
            f"wait for it or choose another folder"], second.stderr
        assert 'epoch' not in second.stdout and time.time() - t0 < 120      # start-up only (a shared machine), no training
        first.send_signal(signal.SIGHUP)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None: first.kill()
    assert first.returncode == 129 and len(error_lines(err)) == 1, err
    assert re.fullmatch(rf"resnetx: hung up \(SIGHUP\) while training \(epoch \d+ of 1000\); nothing was written to "
                        rf"{re.escape(str(out))} \(it was not created\)", error_lines(err)[0]), err
    assert os.listdir(tmp_path) == ['data']                                  # the folder it created, lock and all, is gone


# ---- 3. failures while writing: one line, earlier outputs intact, no temporary file

@pytest.mark.slow
@pytest.mark.parametrize('fail', ['torch', 'json'])
def test_disk_full_while_writing_is_one_line_and_keeps_the_earlier_run(tmp_path, data, monkeypatch, capsys, fail):
    out = tmp_path / 'out'
    assert main(['train', '--data', str(data), '--out', str(out), *FAST]) == 0
    (out / 'notes.md').write_text('mine')
    before = tree(out)
    if fail == 'torch':                   # what torch raises when its zip writer hits ENOSPC
        def save(obj, f, *a, **k):
            Path(f).write_bytes(b'half a file')
            raise RuntimeError('[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/7: file write failed')
        monkeypatch.setattr(torch, 'save', save)
    else:
        write_text = Path.write_text
        def full(self, *a, **k):
            if self.name.startswith('.metrics.json'): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write_text(self, *a, **k)
        monkeypatch.setattr(Path, 'write_text', full)
    capsys.readouterr()
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(out), *FAST, '--seed', '3'])
    reason = 'PytorchStreamWriter failed writing file data/7: file write failed' if fail == 'torch' else 'No space left on device'
    assert line.startswith(f"resnetx train: error: writing {'export.pkl' if fail == 'torch' else 'metrics.json'} to {out} "
                           f"failed ({reason}"), line
    assert line.endswith('no outputs were written, the folder\'s earlier files are kept'), line
    assert tree(out) == before and hidden_left(tmp_path) == []


# ---- 4. every class folder becomes a class, or the run is refused

def refusal(capsys, tmp_path, data, *extra) -> str:
    out = tmp_path / 'out'
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(out), *FAST, *extra])
    assert not out.exists()
    return line


@pytest.mark.parametrize('layout', ['flat', 'split'])
@pytest.mark.parametrize('make, words', [
    (lambda d: d.mkdir(parents=True), "is empty: every class folder must hold images"),
    (lambda d: (d.mkdir(parents=True), (d / 'a.txt').write_text('x'), (d / 'README').write_text('x')),
     "holds 2 files but no images (extensions (none), .txt;"),
])
def test_class_folder_without_images_refused(tmp_path, capsys, layout, make, words):
    data = digit_folder(tmp_path / 'data', layout=layout, n=8)
    make(data / ('train' if layout == 'split' else '') / '5')
    line = refusal(capsys, tmp_path, data)
    assert re.search(rf"class folder '[^']*{'train/' if layout == 'split' else 'data/'}5' " + re.escape(words), line), line


@pytest.mark.parametrize('where', ['train/3', 'valid/7', '3'])
def test_class_folder_that_cannot_be_listed_refused(tmp_path, capsys, monkeypatch, where):
    "Permission denied on a class folder (simulated: the tests run as root, which reads any folder)."
    data = digit_folder(tmp_path / 'data', layout='flat' if where == '3' else 'split', n=8)
    scandir, denied = os.scandir, data / where
    def scan(path='.'):
        if Path(path) == denied: raise PermissionError(errno.EACCES, 'Permission denied', str(path))
        return scandir(path)
    monkeypatch.setattr(os, 'scandir', scan)
    assert f"folder '{denied}' in `data` cannot be read: Permission denied" in refusal(capsys, tmp_path, data)


# ---- 7. names

@pytest.mark.slow
def test_non_utf8_and_non_ascii_class_names_under_lc_all_c(tmp_path):
    data = tmp_path / 'data'
    digit_folder(data, n=8, classes=('3',))
    os.rename(data / 'train' / '3', os.fsencode(data / 'train') + b'/caf\xe9')             # Latin-1, not UTF-8
    os.rename(data / 'valid' / '3', os.fsencode(data / 'valid') + b'/caf\xe9')
    digit_folder(data, n=8, classes=('7',))
    os.rename(data / 'train' / '7', data / 'train' / 'ñandú'); os.rename(data / 'valid' / '7', data / 'valid' / 'ñandú')
    out = tmp_path / 'out'
    res = subprocess.run(command('--data', data, '--out', out, *FAST), capture_output=True, text=True, timeout=600,
                         env={**ENV, 'LC_ALL': 'C', 'PYTHONUTF8': '0', 'PYTHONCOERCECLOCALE': '0'})
    assert res.returncode == 0 and error_lines(res.stderr) == [], res.stderr[-3000:]
    from fastai.vision.all import load_learner
    assert list(load_learner(out / 'export.pkl').dls.vocab) == ['caf\\xe9', 'ñandú']
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['n_train'] == 12 and sorted(os.listdir(out)) == sorted([MARKER, *OUTPUTS])


# ---- 9. non-finite numbers

def test_checkpoint_holding_nan_refused_naming_the_file(tmp_path, data, monkeypatch, capsys):
    import torchvision
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    url = torchvision.models.get_model_weights('resnet18')['DEFAULT'].url
    cached = tmp_path / 'torch' / 'hub' / 'checkpoints' / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    sd = torchvision.models.resnet18().state_dict()
    sd['layer2.0.conv1.weight'][0, 0, 0, 0] = float('nan')
    torch.save(sd, cached)
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(tmp_path / 'out'), *FAST, '--pretrained'])
    assert f"checkpoint file {str(cached)!r} holds NaN or infinite values in 1 tensor(s)" in line, line
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_loss_becoming_nan_stops_the_run_with_one_line(tmp_path, data, monkeypatch, capsys):
    "A model whose output turns NaN at the 2nd training batch: one line, nothing written, no NaN in any JSON."
    import fastai_resnetx.job.train as job
    make, calls = job._learner, [0]
    def learner(dls, s, arch, weights):
        learn = make(dls, s, arch, weights)
        def poison(m, i, o):
            calls[0] += m.training
            return o * float('nan') if m.training and calls[0] >= 2 else o
        learn.model.register_forward_hook(poison)
        return learn
    monkeypatch.setattr(job, '_learner', learner)
    out = tmp_path / 'out'
    line = one_line(capsys, ['train', '--data', str(data), '--out', str(out), *FAST])
    assert line == ("resnetx train: error: the training loss became nan at epoch 1, batch 2: try a smaller --lr or "
                    "check the data and starting weights; no outputs were written"), line
    assert not out.exists()


# ---- 10. labels from a CSV, and layouts that are not class folders; 8. EXIF orientation

def exif_rotated(img:Image.Image, path:Path):
    "Save `img` as a JPEG whose pixels are stored turned 90 degrees, with the EXIF orientation (6) that turns them back."
    exif = Image.Exif(); exif[274] = 6                                       # 6: rotate 90 degrees clockwise to view
    img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)


def test_open_image_applies_exif_orientation(tmp_path):
    import numpy as np
    from fastai_resnetx.job.data import open_image
    from digit_folders import digit_images
    img = digit_images(7, 1, size=32)[0].convert('RGB')
    exif_rotated(img, tmp_path / 'phone.jpg')
    stored = np.asarray(Image.open(tmp_path / 'phone.jpg').convert('RGB')).astype(int)
    upright = np.rot90(stored, k=-1)                                          # turned back by hand: 90 degrees clockwise
    got = np.asarray(open_image(tmp_path / 'phone.jpg')).astype(int)
    assert got.shape == upright.shape and np.array_equal(got, upright)
    assert np.abs(got - np.asarray(img)).mean() < 4 and np.abs(stored - np.asarray(img)).mean() > 20   # JPEG loss only


@pytest.mark.parametrize('bw', [False, True])
def test_the_digits_export_opens_files_as_every_export_does(tmp_path, bw):
    "The default run's learner (digits held as arrays) predicts a phone JPEG as the same picture stored upright."
    from fastai.vision.all import vision_learner, load_learner
    from fastai_resnetx import resnetx_small
    from fastai_resnetx.job.data import digits_dls, with_resize
    from digit_folders import digit_images
    dls = digits_dls(size=16, bs=16, n_items=40, augment=False, bw=bw)
    learn = vision_learner(dls, resnetx_small, pretrained=False, n_in=1 if bw else 3)
    with_resize(learn.dls, 16)
    learn.export(tmp_path / 'export.pkl')
    learn = load_learner(tmp_path / 'export.pkl')
    img = digit_images(7, 1, size=24)[0].convert('RGB').crop((0, 0, 24, 16))   # not square: a turn changes the shape
    exif_rotated(img, tmp_path / 'phone.jpg')
    img.save(tmp_path / 'upright.jpg', quality=95)
    x_phone, x_upright = (learn.dls.test_dl([tmp_path / p]).one_batch()[0] for p in ('phone.jpg', 'upright.jpg'))
    assert x_phone.shape == (1, 1 if bw else 3, 16, 16)
    assert (x_phone - x_upright).abs().mean() < 0.05, (x_phone - x_upright).abs().mean()
    assert learn.dls.test_dl([0]).one_batch()[0].shape == x_phone.shape           # an index is still a digit


def test_images_next_to_annotations_or_a_csv_refused_with_what_works(tmp_path, capsys):
    from digit_folders import write_class
    data = tmp_path / 'pets'
    write_class(data / 'images', 3, 4); write_class(data / 'annotations' / 'trimaps', 7, 4)
    (data / 'annotations' / 'list.txt').write_text('3_0 1 1 1\n')
    line = refusal(capsys, tmp_path, data)
    assert "has images/ next to annotations/: its labels are not class folders; give a CSV of labels with `--labels" in line
    (data / 'labels.csv').write_text('file,label\n')
    assert "next to annotations/, labels.csv:" in refusal(capsys, tmp_path, data)


def labelled_images(root:Path) -> Path:
    "images/ of real digits (3s and 7s as EXIF-rotated phone JPEGs, 8s as PNGs) and labels.csv: file,label."
    from digit_folders import digit_images
    (root / 'images').mkdir(parents=True)
    rows = ['file,label']
    for d in (3, 7):
        for i, img in enumerate(digit_images(d, 8, size=16)):
            exif_rotated(img.convert('RGB'), root / 'images' / f'{d}_{i}.jpg'); rows.append(f'images/{d}_{i}.jpg,digit{d}')
    (root / 'labels.csv').write_text('\n'.join(rows) + '\n')
    return root


def test_labels_csv_is_read_as_fastai_reads_it(tmp_path):
    from fastai_resnetx.job.data import read_csv_labels
    data = labelled_images(tmp_path / 'data')
    items = read_csv_labels(data, data / 'labels.csv')
    assert items.classes == ['digit3', 'digit7'] and len(items.files) == 16 and len(items.valid_idx) == 4
    assert all(items.get_y(f) == f'digit{Path(f).name[0]}' for f in items.files)
    assert items.notes == ['no is_valid column: 4 of 16 images (25.0%) are held out for validation, at random from each class (seed 42)']
    rows = (data / 'labels.csv').read_text().splitlines()
    (data / 'split.csv').write_text('\n'.join([rows[0] + ',is_valid'] + [r + (',True' if i % 4 == 0 else ',False')
                                                                       for i, r in enumerate(rows[1:])]))
    items = read_csv_labels(data, data / 'split.csv')
    assert sorted(Path(items.files[i]).name for i in items.valid_idx) == ['3_0.jpg', '3_4.jpg', '7_0.jpg', '7_4.jpg']
    (data / 'bad.csv').write_text('file,label\nimages/3_0.jpg,digit3\nimages/nope.jpg,digit7\n')
    with pytest.raises(ValueError, match=r"line 3: image 'images/nope.jpg' is not in `data`"):
        read_csv_labels(data, data / 'bad.csv')


def test_labels_csv_columns_by_header_name_and_one_file_under_two_spellings(tmp_path):
    from fastai_resnetx.job.data import read_csv_labels
    data = labelled_images(tmp_path / 'data')
    rows = [r.split(',') for r in (data / 'labels.csv').read_text().splitlines()[1:]]
    # is_valid in the middle: the label is still the column after the file, by name
    (data / 'mid.csv').write_text('fname,is_valid,label\n' + '\n'.join(f"{f},{'True' if i % 4 == 0 else 'False'},{y}"
                                                                       for i, (f, y) in enumerate(rows)))
    items = read_csv_labels(data, data / 'mid.csv')
    assert items.classes == ['digit3', 'digit7'] and len(items.valid_idx) == 4
    for spelling in (str(data / rows[0][0]), 'images/../' + rows[0][0]):   # the same file as line 2
        (data / 'twice.csv').write_text('file,label\n' + '\n'.join(f'{f},{y}' for f, y in rows) + f'\n{spelling},digit7')
        with pytest.raises(ValueError, match=rf"line {len(rows) + 2}: .* is the file of line 2 again"):
            read_csv_labels(data, data / 'twice.csv')


@pytest.mark.slow
def test_labels_csv_run_and_exif_in_training_and_predict(tmp_path):
    import numpy as np
    from fastai.vision.all import load_learner
    from digit_folders import digit_images
    data, out = labelled_images(tmp_path / 'data'), tmp_path / 'out'
    res = run_resnetx('train', '--data', data, '--labels', 'labels.csv', '--out', out, *FAST)   # relative to --data
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    learn = load_learner(out / 'export.pkl')
    assert list(learn.dls.vocab) == ['digit3', 'digit7'] and [metrics['n_train'], metrics['n_valid']] == [12, 4]
    # the exported learner's pipeline (the training one) sees the phone JPEG upright: as the same picture stored upright
    upright = digit_images(7, 1, size=16)[0].convert('RGB')
    upright.save(tmp_path / 'upright.jpg', quality=95)
    x_phone, x_upright = (learn.dls.test_dl([p]).one_batch()[0] for p in (data / 'images' / '7_0.jpg', tmp_path / 'upright.jpg'))
    assert (x_phone - x_upright).abs().mean() < 0.05 and (x_phone - x_upright.transpose(-1, -2).flip(-1)).abs().mean() > 0.1
    assert learn.predict(data / 'images' / '7_0.jpg')[0] == learn.predict(tmp_path / 'upright.jpg')[0]


# ---- 8 (round 2). an arch that cannot be an image classifier's backbone: one line before any work

@pytest.mark.parametrize('arch, words', [
    ('raft_small', "its forward takes 2 inputs (image1, image2), not one image batch"),
    ('r3d_18', "its first convolution is 3-D (Conv3d): it takes video clips, not images"),
    ('fcn_resnet50', "fastai's create_body cuts it before its first layer"),
    ('vit_b_16', "fastai's create_body cannot cut it (StopIteration)"),
])
def test_an_arch_that_is_no_image_classifier_backbone_is_refused_before_the_data(tmp_path, data, capsys, monkeypatch,
                                                                                 arch, words):
    from fastai_resnetx.job import train as job
    monkeypatch.setattr(job, 'read_folder', lambda *a, **k: pytest.fail('the data were read'))
    line = refusal(capsys, tmp_path, data, '--arch', arch)
    assert line.startswith(f"resnetx train: error: `arch` {arch!r} is not an image classification backbone: ") and (
        words in line), line


@pytest.mark.parametrize('arch', ['raft_small', 'r3d_18'])
def test_summary_of_a_non_image_model_says_why_not_the_size(capsys, arch):
    line = one_line(capsys, ['summary', arch])
    assert 'is not an image classification backbone' in line and '`size`' not in line, line


# ---- 9 (round 2). --pretrained offline: which file, where it goes, at once and before any work

@pytest.mark.parametrize('arch, where', [
    ('resnet10t', 'models--timm--resnet10t.c3_in1k'),                      # timm's: the Hugging Face cache
    ('folded_resnet10t', 'models--timm--resnet10t.c3_in1k'),               # a folded timm ResNet: its source's file
    ('resnet18', 'hub/checkpoints/resnet18-f37072fd.pth'),                 # torchvision's: the torch hub cache
    ('resnetx18', 'hub/checkpoints/resnet18-f37072fd.pth'),                # ours: torchvision's ResNet weights
])
def test_pretrained_weights_missing_offline_is_one_line_naming_the_file(tmp_path, data, capsys, monkeypatch, arch,
                                                                        where):
    import time, huggingface_hub
    from fastai_resnetx.job import train as job
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    monkeypatch.setattr(job, 'read_folder', lambda *a, **k: pytest.fail('the data were read'))
    t = time.time()
    line = refusal(capsys, tmp_path, data, '--arch', arch, '--pretrained')
    assert time.time() - t < 10 and 'are not on this machine and' in line and 'cannot be reached' in line, line
    assert where in line and str(tmp_path) in line, line


def test_cached_timm_weights_are_handed_to_timm_as_a_file(tmp_path, monkeypatch, digits16):
    "The cached file itself goes to timm (which would otherwise ask the hub for a newer revision): the same tensors."
    import huggingface_hub
    from fastai.vision.all import vision_learner
    from fastai_resnetx.job.arch_checks import check_pretrained
    from conftest import fill_hf_cache
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    sd = fill_hf_cache(tmp_path / 'hf', 'resnet10t', seed=4)
    kwargs = check_pretrained('resnet10t', 'resnet10t')
    assert kwargs['pretrained_cfg_overlay']['file'].startswith(str(tmp_path / 'hf'))
    learn = vision_learner(digits16, 'resnet10t', pretrained=True, **kwargs)
    assert torch.equal(learn.model[0].model.conv1[0].weight, sd['conv1.0.weight'])
