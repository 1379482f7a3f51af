import json, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from fastai.vision.all import load_learner
from fastai_resnetx import plot_topology, skip_kinds, resnetx50, train
from fastai_resnetx.job.cli import main
from fastai_resnetx.job.train import _atomic


def digit_folder(root:Path, classes=('3', '7'), n=12, layout='split'):
    "A small image folder of real digits: `train/` and `valid/` of class folders, or plain class folders."
    from sklearn.datasets import load_digits
    d = load_digits()
    for c in classes:
        imgs = d.images[d.target == int(c)][:n]
        for i, a in enumerate(imgs):
            sub = (('train' if i < n * 3 // 4 else 'valid') + '/' if layout == 'split' else '') + c
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.uint8(a * 255 / 16)).convert('RGB').resize((16, 16)).save(root / sub / f'{i}.png')
    return root


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'fastai_resnetx', *args], capture_output=True, text=True, timeout=600)


def test_summary_ours_torchvision_timm(capsys):
    assert main(['summary', 'resnetx18', '--size', '32', '--fold', '2']) == 0
    out = capsys.readouterr().out
    assert '[1 ] (stage1)   Stage            : 2   layers' in out and 'FLOPs = 2 x MACs' in out
    assert main(['summary', 'resnet50', '--size', '224']) == 0
    assert '4.089G' in capsys.readouterr().out                    # torchvision's own _ops figure
    assert main(['summary', 'convnext_atto', '--size', '64', '--idx', '1']) == 0
    assert 'stages' in capsys.readouterr().out or True


def test_plot_topology(tmp_path):
    fig = plot_topology(resnetx50, fold=3, figsize=(10, 3), dpi=100, out=tmp_path / 't.png')
    assert Image.open(tmp_path / 't.png').size == (1000, 300)
    m = resnetx50(fold=3)
    assert [(s, l) for s, l, _ in fig.skips] == m.plan.skips()     # the drawn skips are the model's plan
    assert [k for *_, k in fig.skips] == [k for *_, k in skip_kinds(m)]
    assert sum(k == 'projection' for *_, k in fig.skips) == 10    # 3 where a ResNet has them + 7 extra at fold 3
    assert main(['plot', 'resnetx18', '--fold', '2', '--out', str(tmp_path / 'p.png')]) == 0
    assert (tmp_path / 'p.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_train_writes_outputs(tmp_path):
    m = train(n_items=240, epochs=1, size=16, bs=32, out=tmp_path, show=False)
    for f in ('export.pkl', 'loss.png', 'confusion_matrix.png', 'metrics.json'): assert (tmp_path / f).is_file()
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['arch'] == 'resnetx18' and metrics['fold'] == 2 and 0 <= metrics['valid_accuracy'] <= 1
    assert metrics['n_train'] + metrics['n_valid'] == 240
    learn = load_learner(tmp_path / 'export.pkl')
    assert learn.model[0][0].cfg.fold == 2
    assert not list(tmp_path.glob('*.tmp'))


def test_train_on_a_folder_from_the_command_line(tmp_path):
    data = digit_folder(tmp_path / 'digits')
    res = run_cli('train', '--data', str(data), '--epochs', '1', '--size', '16', '--bs', '4', '--out', str(tmp_path / 'out'))
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'final validation accuracy' in res.stdout and '(stage1)' in res.stdout and 'FLOPs' in res.stdout
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['n_train'] == 18 and metrics['n_valid'] == 6  # train/ and valid/ honoured


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    one = digit_folder(tmp_path / 'one', classes=('3',), layout='flat')
    bad = digit_folder(tmp_path / 'bad', layout='flat')
    (bad / '3' / 'broken.png').write_bytes(b'not a png')
    cases = [(['train', '--data', str(tmp_path / 'missing')], 'does not exist'),
             (['train', '--data', str(tmp_path / 'empty')], 'holds no image files'),
             (['train', '--data', str(one)], 'at least 2 class folders'),
             (['train', '--data', str(bad)], 'unreadable image'),
             (['train', '--arch', 'resnetx51'], "'resnetx51' is not known"),
             (['train', '--epochs', '0'], '`epochs` must be a int >= 1'),
             (['train', '--lr', 'fast'], "invalid float value: 'fast'"),
             (['summary', 'resnetx18', '--size', '2'], '--size'),
             (['plot', 'resnetx18', '--fold', '0'], '`fold` must be an integer >= 1')]
    for args, words in cases:
        try: code = main(args)
        except SystemExit as e: code = e.code                  # argparse's own errors
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.strip()]
        assert code == 2 and len(lines) == 1 and words in lines[0], (args, err)
    res = run_cli('train', '--data', str(tmp_path / 'missing'))   # the real command: exit code 2, no traceback
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert [l for l in res.stderr.splitlines() if l.strip()] == [f"resnetx: error: `data` folder '{tmp_path / 'missing'}' does not exist"]


def test_interrupted_write_leaves_nothing(tmp_path):
    def write(p):
        p.write_bytes(b'half')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): _atomic(tmp_path / 'export.pkl', write)
    assert list(tmp_path.iterdir()) == []
