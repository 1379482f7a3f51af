import os, subprocess, sys, socket
from pathlib import Path
import torch

HERE = Path(__file__).parent


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


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


def test_cli_train_under_torchrun(tmp_path):
    "The README's launch command: `torchrun --nproc_per_node 2 -m fastai_resnetx train` on CPU (tiny run)."
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), '-m', 'fastai_resnetx', 'train', '--epochs', '1', '--size', '16',
           '--bs', '32', '--out', str(tmp_path / 'out')]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count('final validation accuracy') == 1                # only rank 0 reports and writes
    assert (tmp_path / 'out' / 'export.pkl').is_file() and (tmp_path / 'out' / 'metrics.json').is_file()
