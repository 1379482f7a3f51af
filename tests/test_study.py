"`resnetx study`: the paired statistics against a hand-worked example, the report, resume, and a changed setting refused."
import json, math

import pytest

from fastai_resnetx.job import study as study_mod
from fastai_resnetx.job.study import StudySettings, run_study, read_results, study_arms, Arm
from fastai_resnetx.job.study_stats import paired_diff, arm_summary, t95
from fastai_resnetx.job.study_report import report_markdown
from test_idx_data import write_idx_set


def fake_runs():
    "Five seeds of fold 1 and fold 2: fold 2 is ahead by 1, 2, 0, 3 and 1.5 points."
    base = [0.90, 0.91, 0.92, 0.90, 0.91]
    up = [0.01, 0.02, 0.00, 0.03, 0.015]
    runs = [dict(arm='fold1', seed=s, test_accuracy=a, test_loss=0.3, params=1000, flops=2e6, fit_seconds=60)
            for s, a in enumerate(base)]
    runs += [dict(arm='fold2', seed=s, test_accuracy=a + d, test_loss=0.29, params=1100, flops=2.5e6, fit_seconds=90)
             for s, (a, d) in enumerate(zip(base, up))]
    return runs


def test_paired_difference_by_hand():
    d = paired_diff(fake_runs(), 'fold2', 'fold1')
    # by hand: mean 0.015; deviations -0.005, 0.005, -0.015, 0.015, 0 -> sum of squares 0.0005, / 4 -> sd 0.0111803;
    # t(0.975, 4) = 2.776445 (tables); half width 2.776445 * 0.0111803 / sqrt(5) = 2.776445 * 0.005 = 0.0138822
    assert d['mean'] == pytest.approx(0.015) and d['std'] == pytest.approx(0.0111803, abs=1e-7)
    assert t95(5) == pytest.approx(2.776445, abs=1e-6) and t95(2) == pytest.approx(12.706205, abs=1e-6)
    assert d['ci95'] == pytest.approx((0.0011178, 0.0288822), abs=1e-7)
    assert (d['wins'], d['ties'], d['losses']) == (4, 1, 0) and d['seeds'] == [0, 1, 2, 3, 4]
    s = arm_summary(fake_runs(), 'fold1')
    assert s['acc_mean'] == pytest.approx(0.908) and s['acc_std'] == pytest.approx(math.sqrt(0.00028 / 4))   # deviations -8, 2, 12, -8, 2 (x 1e-3)


def test_pairs_only_seeds_both_arms_have():
    runs = [r for r in fake_runs() if not (r['arm'] == 'fold2' and r['seed'] == 4)]
    d = paired_diff(runs, 'fold2', 'fold1')
    assert d['n'] == 4 and d['mean'] == pytest.approx(0.015)      # (1 + 2 + 0 + 3) / 4 points
    assert paired_diff(runs[:1] + runs[5:6], 'fold2', 'fold1')['ci95'] is None   # one pair: no interval


def test_report_table_rows():
    text = report_markdown(fake_runs(), 'title')
    rows = [l for l in text.splitlines() if l.startswith('| fold')]
    assert rows[0] == '| fold1 | 5 | 0.001M | 2.0 | 90.80 ± 0.84 |  |  |  | 1.0 |'
    assert rows[1] == '| fold2 | 5 | 0.001M | 2.5 | 92.30 ± 0.84 | +1.50 | [+0.11, +2.89] | 4/0 (1 ties) | 1.5 |'


def test_arms_of_a_study():
    s = StudySettings(arch='resnetx18', folds=(3, 2), stage_local=True).checked()
    assert s.folds == (1, 2, 3)
    arms, notes = study_arms(s)
    assert [a.name for a in arms] == ['fold1', 'fold2', 'fold3', 'fold2-local', 'fold3-local'] and notes == []
    # resnetx_small has one unit a stage: every folded skip crosses a stage, so stage-local is fold 1 and runs once
    arms, notes = study_arms(StudySettings(folds=(1, 2), stage_local=True, equal_cost=True).checked())
    assert [a.name for a in arms] == ['fold1', 'fold2']
    assert notes[0] == 'fold2-local is the same model as fold1 (the same skip sources [0, 1, 2, 3]): run once, as fold1'
    # fold 2 has 0.3 MFLOPs fewer than fold 1 (its projections skip to thinner maps): no width gets closer
    assert notes[1].startswith('equal cost: fold 1 (26.30 MFLOPs) is already the closest to fold 2 (26.0')
    with pytest.raises(ValueError, match=r"`fold` must be <= 3"):   # resnetx_small has 4 units
        study_arms(StudySettings(folds=(1, 4)).checked())


@pytest.fixture
def tiny(tmp_path):
    "A small idx data set (8x8 px, 3 classes) and a study of 2 folds x 2 seeds, 1 epoch, on it."
    write_idx_set(tmp_path / 'data', n_train=48, n_test=24, size=(8, 8))
    return tmp_path, StudySettings(data=str(tmp_path / 'data'), folds=(1, 2), seeds=2, epochs=1, bs=16, lr=1e-3,
                                   flip=False)


def test_study_resumes_after_a_stop_with_the_same_results(tiny, monkeypatch):
    tmp, s = tiny
    whole, _ = run_study(tmp / 'whole', s, log=lambda *a: None)
    assert sorted((r['arm'], r['seed']) for r in whole) == [('fold1', 0), ('fold1', 1), ('fold2', 0), ('fold2', 1)]
    real, calls, stopped = study_mod.run_one, [], []
    class Stopped(Exception): "the study stopped from outside (Ctrl-C, a crash) in its second run"
    def stop_at_second(*a):
        calls.append(a[2].name)
        if len(calls) == 2 and not stopped:
            stopped.append(True)
            raise Stopped
        return real(*a)
    monkeypatch.setattr(study_mod, 'run_one', stop_at_second)
    with pytest.raises(Stopped): run_study(tmp / 'part', s, log=lambda *a: None)
    assert len(read_results(tmp / 'part')) == 1 and not (tmp / 'part' / 'report.md').exists()
    calls.clear()
    resumed, text = run_study(tmp / 'part', s, log=lambda *a: None)
    assert calls == ['fold2', 'fold1', 'fold2']                 # the finished run is skipped
    key = lambda r: (r['arm'], r['seed'])
    assert [(key(r), r['test_accuracy'], r['test_loss']) for r in sorted(resumed, key=key)] == \
           [(key(r), r['test_accuracy'], r['test_loss']) for r in sorted(whole, key=key)]
    table = lambda t: [l.rsplit('|', 2)[0] for l in t.splitlines() if l.startswith('| fold')]   # less the minutes
    assert table((tmp / 'part' / 'report.md').read_text()) == table((tmp / 'whole' / 'report.md').read_text())
    assert (tmp / 'part' / 'report.md').read_text() == text and len(table(text)) == 2
    assert (tmp / 'part' / 'study.png').read_bytes()[:4] == b'\x89PNG'
    rec = json.loads((tmp / 'part' / 'results.jsonl').read_text().splitlines()[0])
    assert {'fold', 'seed', 'params', 'flops', 'test_accuracy', 'test_loss', 'fit_seconds', 'precision', 'cpu',
            'torch', 'fastai_resnetx'} <= set(rec) and rec['n_test'] == 24


def test_a_changed_setting_is_refused(tiny):
    tmp, s = tiny
    run_study(tmp / 'st', StudySettings(**{**s.__dict__, 'seeds': 1, 'folds': (1,)}), log=lambda *a: None)
    before = (tmp / 'st' / 'results.jsonl').read_text()
    with pytest.raises(ValueError, match=r"other settings \(epochs 1 -> 2\)"):
        run_study(tmp / 'st', StudySettings(**{**s.__dict__, 'epochs': 2}), log=lambda *a: None)
    assert (tmp / 'st' / 'results.jsonl').read_text() == before
