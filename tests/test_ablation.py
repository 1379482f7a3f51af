"Smoke test of bench/ablation.py: 1 seed, 1 epoch, 16 px, 128 digits; the JSON has every field and the tables parse."
import json, math
from pathlib import Path

import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'bench' / 'ablation.py'


def _load_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location('ablation', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def _tables(md:str):
    "Every Markdown table as (header, rows), checking that each has a separator and a constant column count."
    tables, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith('|'):
            block = []
            while i < len(lines) and lines[i].startswith('|'): block.append(lines[i]); i += 1
            cells = [[c.strip() for c in l.strip().strip('|').split('|')] for l in block]
            assert len(block) >= 3, block
            assert all(set(c) <= set('-:') and c for c in cells[1]), f'no separator row: {block[1]}'
            assert len({len(r) for r in cells}) == 1, f'ragged table: {block}'
            tables.append((cells[0], cells[2:]))
        else: i += 1
    return tables


def run_script(argv):
    "The bench script's CLI, in process; main() sets 1 thread: the other tests get theirs back."
    threads = torch.get_num_threads()
    try: _load_script().main(argv)
    finally: torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ablation')
    js, md = out / 'a.json', out / 'a.md'
    run_script(['--quick', '--device', 'cpu', '--out', str(js), '--md', str(md)])
    return json.loads(js.read_text()), md.read_text()


@pytest.mark.slow
def test_warm_start_leaves_fastais_model_meta_as_it_was(quick_run):
    "The warm-start runs load their checkpoint through vision_learner's `weights=`, not by rewriting the shared entry."
    from fastai.vision.all import model_meta
    import fastai_resnetx
    assert any(r['init'] != 'random' for r in quick_run[0]['runs'])          # warm-start runs did happen
    assert model_meta[fastai_resnetx.resnetx18]['weights'] == 'DEFAULT' == model_meta['resnetx18']['weights']


@pytest.mark.slow
def test_json_has_every_run_and_field(quick_run):
    res, _ = quick_run
    abl = _load_script()
    meta, runs = res['meta'], res['runs']
    for key in ('command', 'machine', 'config', 'total_seconds', 'started', 'finished', 'checkpoint_kind',
                'equal_cost_matches'):
        assert key in meta, key
    assert meta['machine']['device'] == 'cpu' and meta['config']['folds'] == [1, 2] and meta['config']['seeds'] == [0]
    # 1 seed: fold 1 and 2, the matched fold=1 model, the local checkpoint, warm start at fold 1 and 2
    kinds = sorted((r['experiment'], r['model']) for r in runs)
    assert [k for k, _ in kinds] == ['checkpoint', 'equal_cost', 'folds', 'folds', 'warm_start', 'warm_start']
    for r in runs:
        assert set(abl.RUN_FIELDS) <= set(r), set(abl.RUN_FIELDS) - set(r)
        assert r['error'] is None, r['error']
        assert 0 <= r['valid_accuracy'] <= 1 and math.isfinite(r['valid_loss']) and math.isfinite(r['train_loss'])
        assert r['params'] > 1e6 and r['flops'] > 1e6 and r['images_per_s'] > 0 and r['train_images'] > 0
        assert r['seed'] == 0 and r['epochs'] == 1 and r['size'] == 16
    folds = {r['fold']: r for r in runs if r['experiment'] == 'folds'}
    assert folds[2]['params'] > folds[1]['params'] and folds[2]['flops'] > folds[1]['flops']   # the added projections
    warm = {r['fold']: r for r in runs if r['experiment'] == 'warm_start'}
    assert warm[1]['new_tensors'] == 0 and warm[2]['new_tensors'] > 0
    match = meta['equal_cost_matches']['fold=2']
    assert abs(match['flops'] - match['target_flops']) / match['target_flops'] < 0.02
    an = res['analysis']
    for row in an['models']: assert set(abl.SUMMARY_FIELDS) <= set(row), set(abl.SUMMARY_FIELDS) - set(row)
    assert {(d['experiment'], d['model']) for d in an['diffs']} == {('folds', 'fold=2'), ('warm_start', 'fold=2'),
                                                                   ('equal_cost', 'fold=2')}
    for d in an['diffs']:
        assert set(abl.DIFF_FIELDS) <= set(d) and d['n_pairs'] == 1


@pytest.mark.slow
def test_markdown_tables_parse(quick_run):
    res, md = quick_run
    assert res['meta']['command'] in md
    tables = _tables(md)
    assert len(tables) == 4                                   # folds, equal cost, warm start, every run
    header, rows = tables[0]
    assert header[:2] == ['model', 'runs'] and [r[0] for r in rows] == ['fold=1', 'fold=2']
    for header, rows in tables[:3]:                           # mean ± std cells parse as numbers
        i = header.index('valid acc %')
        for r in rows:
            mean, std = (float(v) for v in r[i].split('±'))
            assert 0 <= mean <= 100 and std >= 0
    header, rows = tables[-1]
    assert len(rows) == len(res['runs'])                      # every run is listed
    i = header.index('valid acc %')
    assert [float(r[i]) for r in rows] == pytest.approx([x['valid_accuracy'] * 100 for x in res['runs']], abs=0.006)


def test_args_and_stats():
    abl = _load_script()
    a = abl.parse_args(['--quick', '--folds', '3,2', '--seeds', '4,7'])
    assert a.folds == [1, 2, 3] and a.seeds == [4, 7] and a.epochs == 1 and a.size == 16
    assert abl.parse_args(['--seeds', '5']).seeds == [0, 1, 2, 3, 4]
    runs = [dict(experiment='folds', model=m, seed=s, valid_accuracy=acc, valid_loss=1 - acc, error=None)
            for s, (a1, a2) in enumerate([(.90, .92), (.91, .92), (.93, .92)]) for m, acc in (('fold=1', a1), ('fold=2', a2))]
    d = abl.paired_diff(runs, 'folds', 'fold=2', 'fold=1')
    assert d['acc_diff_mean'] == pytest.approx(0.0066667, abs=1e-6) and (d['wins'], d['ties'], d['losses']) == (2, 0, 1)
    assert d['acc_diff_ci95'][0] < 0 < d['acc_diff_ci95'][1] and d['verdict'] == 'no difference within noise'


@pytest.mark.slow
def test_warm_start_from_a_folded_timm_resnet(tmp_path):
    "`--warm-arch resnet10t --checkpoint random`: warm runs at folds 1 and 2 of the folded source; new tensors at fold 2."
    js, md = tmp_path / 'a.json', tmp_path / 'a.md'
    run_script(['--quick', '--device', 'cpu', '--folds', '1', '--skip-equal-cost', '--warm-arch', 'resnet10t',
                '--checkpoint', 'random', '--out', str(js), '--md', str(md)])
    res = json.loads(js.read_text())
    assert res['meta']['config']['warm_arch'] == 'resnet10t' and 'folded_resnet10t' in res['meta']['checkpoint_kind']
    for r in res['runs']: assert r['error'] is None, r['error']
    ck = [r for r in res['runs'] if r['experiment'] == 'checkpoint']
    assert [(r['arch'], r['model']) for r in ck] == [('resnet10t', 'timm resnet10t')]
    warm = {r['fold']: r for r in res['runs'] if r['experiment'] == 'warm_start'}
    assert sorted(warm) == [1, 2] and {r['arch'] for r in warm.values()} == {'resnet10t'}
    for r in warm.values():
        assert r['init'] == 'timm resnet10t, random init (not trained), seed 0' and math.isfinite(r['valid_loss'])
    assert warm[1]['new_tensors'] == 0 and warm[1]['new_keys'] == []      # fold 1 is the source itself
    # by hand: resnet10t has one block per stage (64, 128, 256, 512 channels); at fold 2 stage2's skip comes from the
    # stem (64 ch, /4: its input's shape, the source's own shortcut), stage3's from stage1 and stage4's from stage2
    # (other shapes): two new avg-pool + 1x1 conv + BN projections, 6 tensors each
    expected = {f'stage{s}.0.shortcut.{t}' for s in (3, 4) for t in ('1.weight', '2.weight', '2.bias', '2.running_mean',
                                                                     '2.running_var', '2.num_batches_tracked')}
    assert warm[2]['new_tensors'] == 12 and set(warm[2]['new_keys']) == expected


def test_warm_arch_bad_name_is_a_clear_error():
    abl = _load_script()
    with pytest.raises(SystemExit, match=r"--warm-arch must be one of timm's resnet.py archs .* got 'vit_base'"):
        abl.Ablation(abl.parse_args(['--quick', '--device', 'cpu', '--warm-arch', 'vit_base']))
