import os, subprocess, sys, socket
from pathlib import Path
import json
import pytest, torch

HERE = Path(__file__).parent


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    "torchrun launches 2 CPU processes (gloo) on a tiny digits run; both finish with identical, trained weights."
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), str(HERE / 'ddp_digits.py'), str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'rank 0 of 2 done, backend gloo' in res.stdout and 'rank 1 of 2 done, backend gloo' in res.stdout
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1))
    assert r0['final'].keys() == r1['final'].keys()
    for k in r0['final']: assert torch.equal(r0['final'][k], r1['final'][k]), k
    moved = [k for k in r0['final'] if r0['final'][k].is_floating_point() and not torch.equal(r0['final'][k], r0['init'][k])]
    assert len(moved) > 50                       # it really trained


@pytest.mark.slow
def test_cli_train_under_torchrun(tmp_path):
    "The README's launch command: `torchrun --nproc_per_node 2 -m fastai_resnetx train` on CPU (tiny run, small arch)."
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), '-m', 'fastai_resnetx', 'train', '--arch', 'resnetx_small', '--epochs', '1',
           '--size', '16', '--bs', '32', '--out', str(tmp_path / 'out')]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count('final validation accuracy') == 1                # only rank 0 reports and writes
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['n_valid'] == 359 and 'Traceback' not in res.stderr
    # the accuracy reported is the whole validation set's, gathered from both processes: the exported learner agrees
    from fastai.vision.all import load_learner, RandomSplitter, accuracy
    learn = load_learner(tmp_path / 'out' / 'export.pkl')
    _, valid = RandomSplitter(0.2, seed=42)(list(range(1797)))
    preds, targs = learn.get_preds(dl=learn.dls.test_dl([int(i) for i in valid], with_labels=True))
    assert abs(float(accuracy(preds, targs)) - metrics['valid_accuracy']) < 1e-6
