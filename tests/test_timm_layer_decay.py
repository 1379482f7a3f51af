"timm's optimizer factory with layer decay over ResNetX's `group_matcher` (bench/timm_layer_decay.py): stem smallest, head 1."
import importlib.util
from pathlib import Path

import pytest, timm

SCRIPT = Path(__file__).parents[1] / 'bench' / 'timm_layer_decay.py'


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('timm_layer_decay', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize('fold', [1, 3])
def test_layer_decay_stem_smallest_head_one(bench, fold):
    m = timm.create_model('resnetx18', fold=fold)
    rows = bench.layer_decay_table(m, lr=1e-3, layer_decay=0.7)
    units = [f'stage{s}.{i}' for s in range(1, 5) for i in range(2)]
    assert [r[0] for r in rows] == ['conv1+bn1', *units, 'fc']         # one layer per unit, input to output
    for i, (layer, n, scale, lr) in enumerate(rows):                     # 10 layers: 0.7**9 for the stem ... 1.0 for fc
        assert scale == pytest.approx(0.7 ** (len(rows) - 1 - i)) and lr == pytest.approx(1e-3 * scale), layer
    assert sum(r[1] for r in rows) == sum(p.numel() for p in m.parameters())   # every parameter is in one layer
    shortcut = sum(p.numel() for n, p in m.named_parameters() if n.startswith('stage3.1.shortcut'))
    assert (shortcut > 0) == (fold == 3)   # a fold-3 projection trains at its unit's rate
