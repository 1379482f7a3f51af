"The package's layers (README, Layout): each folder imports only from the folders under it, and the front door only the standard library."
import ast, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / 'fastai_resnetx'
# a folder -> the package parts it may import from (checks.py is under all of them)
ALLOWED = {'model': {'checks'}, 'inspection': {'checks', 'model'}, 'integration': {'checks', 'model', 'inspection'},
           'job': {'checks', 'model', 'inspection', 'integration'}}


def package_imports(path:Path, folder:str) -> set:
    "The top-level parts of `fastai_resnetx` that the file at `path` (in `folder`) imports, at any depth of the code."
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: parts.add(folder)                       # from .x: its own folder
            elif node.level == 2: parts.add((node.module or '').split('.')[0] or '__init__')
            elif node.level == 0 and (node.module or '').startswith('fastai_resnetx'):
                parts.add((node.module.split('.') + ['__init__'])[1])
        elif isinstance(node, ast.Import):
            parts |= {(a.name.split('.') + ['__init__'])[1] for a in node.names if a.name.startswith('fastai_resnetx')}
    return parts


@pytest.mark.parametrize('folder', sorted(ALLOWED))
def test_folder_imports_only_from_the_layers_under_it(folder):
    files = sorted((PKG / folder).glob('*.py'))
    assert files, f'no files in {PKG / folder}'
    for path in files:
        wrong = package_imports(path, folder) - ALLOWED[folder] - {folder}
        assert not wrong, f'{path.relative_to(ROOT)} imports {sorted(wrong)}; {folder}/ may import only {sorted(ALLOWED[folder])}'


def test_the_rule_catches_an_upward_import(tmp_path):
    # the check above can fail: an upward import in a model file is seen, at any depth of the code
    f = tmp_path / 'x.py'
    f.write_text('def build():\n    from ..job.train import train\n    import fastai_resnetx.integration.precision\n')
    assert package_imports(f, 'model') - ALLOWED['model'] - {'model'} == {'job', 'integration'}


def test_front_door_imports_only_the_standard_library():
    for path in sorted((ROOT / 'resnetx_cli').glob('*.py')):
        for node in ast.parse(path.read_text()).body:   # module level: what `resnetx --help` pays for
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split('.')[0] in sys.stdlib_module_names, f'{path.name} imports {name} at module level'
