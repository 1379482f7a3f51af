"Every notebook in nbs/ runs top to bottom without an error, executed by nbclient in a fresh kernel as a reader would run it."
import os, time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NBS = Path(__file__).resolve().parent.parent / 'nbs'
NOTEBOOKS = sorted(NBS.glob('*.ipynb'))
# one thread per kernel: the suite runs in parallel (pytest -n 2) on a few cores, and oversubscribed threads crawl
THREADS = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1'}


def test_notebooks_found():
    names = [p.name for p in NOTEBOOKS]
    for name in ('01_quick_start.ipynb', '02_pretrained_weights.ipynb', '03_flops_summary.ipynb', '04_splitting_any_model.ipynb',
                 '05_resnetx_and_fold.ipynb', '06_blocks.ipynb', '07_unet_segmentation.ipynb',
                 '08_fashion_mnist_study.ipynb'):
        assert name in names, f'{name} is missing from {NBS}: {names}'


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name='python3', timeout=300, resources={'metadata': {'path': str(NBS)}})
    start = time.time()
    client.execute(env={**os.environ, **THREADS})   # raises CellExecutionError, with the cell and traceback, on an error
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert not errors, f"{path.name}: {[f'{e.ename}: {e.evalue}' for e in errors]}"
    assert all(c.execution_count for c in nb.cells if c.cell_type == 'code' and c.source.strip()), f'{path.name}: a cell did not run'
    print(f'{path.name}: {time.time() - start:.1f} s')
