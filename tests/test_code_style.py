"The package reads evenly: no line over 120 characters, one statement per line, no comment citing a tracker or spec."
import io, re, tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(p for d in ('fastai_resnetx', 'resnetx_cli') for p in (ROOT / d).rglob('*.py'))


def test_the_files_are_found():
    assert len(FILES) >= 30 and ROOT / 'fastai_resnetx' / 'model' / 'resnetx.py' in FILES


@pytest.mark.parametrize('path', FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_lines_statements_and_comments(path):
    src = path.read_text()
    long = [i for i, line in enumerate(src.splitlines(), 1) if len(line) > 120]
    semis = [t.start[0] for t in tokenize.generate_tokens(io.StringIO(src).readline)
             if t.type == tokenize.OP and t.string == ';']
    cites = [i for i, line in enumerate(src.splitlines(), 1) if re.search(r'\bissue ?#?\d+|\bseed ?0\d\d\b', line, re.I)]
    assert (long, semis, cites) == ([], [], []), f"{path.name}: lines over 120 {long}, `;` at {semis}, cites at {cites}"


def test_no_function_over_40_lines():
    "The house rule: a function that needs more than 40 lines is two functions."
    import ast
    long = [f'{p.relative_to(ROOT)}:{n.name} ({n.end_lineno - n.lineno + 1})' for p in FILES
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 40]
    assert not long, f'functions over 40 lines: {long}'
