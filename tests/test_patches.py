"The fastai methods the package patches, all from integration/patches.py (and the two documented elsewhere)."
import socket, subprocess, sys

import pytest

import torch.distributed as dist
from fastai.distributed import DistributedDL
from fastai.learner import Learner

import fastai_resnetx  # noqa: F401  (importing the package applies the patches)


def test_patched_methods_come_from_one_module():
    "Learner.summary and DistributedDL._broadcast are patches.py's; arch_summary and to_bf16 are where it says."
    assert Learner.summary.__module__ == 'fastai_resnetx.integration.patches'
    assert DistributedDL._broadcast.__module__ == 'fastai_resnetx.integration.patches'
    assert Learner.arch_summary.__module__ == 'fastai_resnetx.inspection.arch_summary'
    assert Learner.to_bf16.__module__ == 'fastai_resnetx.integration.precision'


def test_broadcast_runs_on_a_cpu_process_group():
    "fastai's own `_broadcast` calls `.cuda()`; ours broadcasts on gloo: a one-process group gets its values back."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        assert DistributedDL._broadcast(None, [7, 11], 0) == [7, 11]
    finally:
        dist.destroy_process_group()


@pytest.mark.slow   # a fresh interpreter importing fastai: ~10 s
def test_importing_the_package_leaves_warning_filters_and_patches_fastai_distributed_when_it_comes():
    "accelerate (which fastai.distributed imports) adds a global warning filter: the package does not import it."
    code = """
import warnings, sys
import fastai.vision.all
before = list(warnings.filters)
import fastai_resnetx
print(list(warnings.filters) == before, 'accelerate' in sys.modules, 'fastai.distributed' in sys.modules)
from fastai.distributed import DistributedDL
print(DistributedDL._broadcast.__module__)
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['True', 'False', 'False', 'fastai_resnetx.integration.patches']
