import pytest
from fastai_resnetx.model.topology import skip_source, stage_of, stage_distance, fold_plan, get_pred, layer_diff


def test_seed_values():
    assert get_pred(l=17, d=2, start_id=13) == 15
    assert get_pred(l=50, d=5, start_id=8) == 44
    assert get_pred(l=12, d=1, start_id=1) == 11
    assert get_pred(l=8, d=5, start_id=7) == 4
    assert get_pred(l=12, d=4, start_id=6) == 10
    assert layer_diff(4, 0, (3, 4, 6, 3)) == 2


# skip sources of units 1..16 of resnet50's layout, written out from the rule:
# inside the window the skip length cycles 2, 4, ..., 2*(fold-1)
SKIPS_3463 = {
    1: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    2: (0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14),
    3: (0, 1, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12),
    4: (0, 1, 2, 2, 1, 0, 5, 4, 3, 8, 7, 6, 11, 10, 9, 14),
}


@pytest.mark.parametrize('fold', [1, 2, 3, 4])
def test_skip_table(fold):
    plan = fold_plan((3, 4, 6, 3), fold)
    assert plan.sources == SKIPS_3463[fold]
    assert plan.stages == (1,) * 3 + (2,) * 4 + (3,) * 6 + (4,) * 3
    assert plan.n_alive == fold
    assert plan.skips()[:2] == [(SKIPS_3463[fold][0], 1), (SKIPS_3463[fold][1], 2)]


def test_resnet18_layout_fold3_by_hand():
    # start_id = 3: units 1-2 plain; from unit 3 the skip length alternates 2, 4 (worked out by hand)
    plan = fold_plan((2, 2, 2, 2), fold=3)
    assert plan.sources == (0, 1, 1, 0, 3, 2, 5, 4)
    crossing = [(s, l) for s, l in plan.skips() if s != l - 1 and stage_distance(l, s, (2, 2, 2, 2)) >= 1]
    assert crossing == [(1, 3), (0, 4), (3, 5), (2, 6), (5, 7), (4, 8)]   # 6 of 8 skips reach into an earlier stage
    assert [stage_distance(l, s, (2, 2, 2, 2)) for s, l in crossing] == [1, 2, 1, 2, 1, 2]


def test_window():
    plan = fold_plan((3, 4, 6, 3), fold=2, start_id=5, end_id=10)
    assert plan.sources[:4] == (0, 1, 2, 3)            # before the window: plain ResNet
    assert plan.sources[4:10] == (3, 4, 5, 6, 7, 8)     # units 5..10 skip two back
    assert plan.sources[10:] == (10, 11, 12, 13, 14, 15)


def test_cross_stage_skips_allowed():
    # a skip may cross more than one stage: a projection adapts the earlier output's shape
    plan = fold_plan((3, 4, 6, 3), fold=4)
    assert plan.sources[8] == 3 and stage_distance(9, 3, (3, 4, 6, 3)) == 2  # unit 9 (stage 3) reads output 3 (stage 1)
    assert plan.sources[5] == 0 and stage_distance(6, 0, (3, 4, 6, 3)) == 2  # unit 6 (stage 2) reads the stem


def test_stage_of():
    assert [stage_of(o, (3, 4, 6, 3)) for o in (0, 1, 3, 4, 7, 8, 13, 14, 16)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_slots_replay():
    "Replaying the slot plan with symbolic values gives every unit its input and its skip source."
    for fold in (1, 2, 3, 4, 5):
        plan = fold_plan((3, 4, 6, 3), fold)
        buf = [0] * plan.n_alive
        for l in range(1, plan.n_units + 1):
            assert buf[plan.in_slots[l - 1]] == l - 1
            assert buf[plan.skip_slots[l - 1]] == plan.sources[l - 1]
            buf[plan.out_slots[l - 1]] = l


@pytest.mark.parametrize('kwargs, words', [
    (dict(fold=0), ['fold', '0', '>= 1']),
    (dict(fold=3, start_id=2), ['start_id', '2', '>= `fold`']),
    (dict(fold=2, start_id=5, end_id=5), ['end_id', '5', '> `start_id`']),
    (dict(fold=2, end_id=17), ['end_id', '17', '<= the number of units']),
    (dict(fold=1.5), ['fold', '1.5', 'integer']),
    (dict(fold='2'), ['fold', "'2'", 'integer']),
])
def test_bad_input(kwargs, words):
    with pytest.raises(ValueError) as e: fold_plan((3, 4, 6, 3), **kwargs)
    for w in words: assert w in str(e.value)


def test_bad_layout():
    with pytest.raises(ValueError, match=r'num_units\[1\].*no empty stage'): fold_plan((3, 0, 6, 3))
    with pytest.raises(ValueError, match='num_units'): fold_plan(())
    with pytest.raises(ValueError, match='unit'): skip_source(0)


def test_start_id_past_the_last_unit_names_start_id():
    "The user passed `start_id`, not `end_id`: the error names what was passed."
    for bad in (16, 20):
        with pytest.raises(ValueError, match=rf"^`start_id` must be <= 15 for num_units=\(3, 4, 6, 3\) \(16 units; "
                                             rf".*needs 2 units at least\), got {bad}$"):
            fold_plan((3, 4, 6, 3), 2, start_id=bad)
    assert fold_plan((3, 4, 6, 3), 2, start_id=15).sources[-3:] == (13, 13, 14)   # units 15-16 folded: two back


def test_skip_source_defaults():
    "Without `start_id` the window starts at unit `fold`; without `end_id` it never ends (hand-worked, fold 3)."
    # fold 3: units 1-2 plain (sources 0, 1); from unit 3 the skip length alternates 2, 4
    assert [skip_source(u, 3) for u in range(1, 9)] == [0, 1, 1, 0, 3, 2, 5, 4]
    assert [skip_source(u, 2) for u in (1, 2, 3, 100)] == [0, 0, 1, 98]
    assert [skip_source(u) for u in (1, 2, 50)] == [0, 1, 49]
    # an explicit window: units 5..6 folded (fold 2: two back), the others one back
    assert [skip_source(u, 2, 5, 6) for u in range(3, 9)] == [2, 3, 3, 4, 6, 7]


def test_stage_of_bounds():
    "Output 16 is the last of (3, 4, 6, 3); 17 does not exist; -1 neither."
    assert stage_of(16, (3, 4, 6, 3)) == 4
    for bad in (17, -1):
        with pytest.raises(ValueError, match=rf"^`output` must be an integer in \[0, 16\], got {bad}$"):
            stage_of(bad, (3, 4, 6, 3))


def test_stage_distance_needs_an_earlier_source():
    assert stage_distance(5, 4, (3, 4, 6, 3)) == 0 and stage_distance(4, 3, (3, 4, 6, 3)) == 1
    for source in (5, 6):
        with pytest.raises(ValueError, match=rf"^`source` \({source}\) must come before `unit` \(5\)$"):
            stage_distance(5, source, (3, 4, 6, 3))


@pytest.mark.parametrize('bad', [5.5, '6', True])
def test_end_id_must_be_an_integer(bad):
    msg = rf"^`end_id` must be an integer >= 1, got {bad!r}$"
    with pytest.raises(ValueError, match=msg): fold_plan((3, 4, 6, 3), 2, end_id=bad)
    with pytest.raises(ValueError, match=msg): skip_source(4, 2, end_id=bad)


def test_skip_source_checks_its_arguments():
    "skip_source checks what it is given itself (fold_plan is not the only caller)."
    cases = [((3, 0), r"^`fold` must be an integer >= 1, got 0$"),
             ((3, 1, 0), r"^`start_id` must be an integer >= 1, got 0$"),
             ((3, 2, 1), r"^`start_id` must be >= `fold` \(2\), got 1$"),
             ((3, 2, '3'), r"^`start_id` must be an integer >= 1, got '3'$"),
             ((3, 2, 3, 3), r"^`end_id` must be > `start_id` \(3\), got 3$")]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg): skip_source(*args)


def test_layouts_at_the_edges():
    "A single stage, one-unit stages, fold == units - 1; `num_units` that is not a non-empty tuple is refused."
    assert fold_plan((16,), 2).sources == SKIPS_3463[2] and fold_plan((16,), 2).stages == (1,) * 16
    assert fold_plan((1, 1, 1), 1).sources == (0, 1, 2) and fold_plan((1, 1, 1), 1).stages == (1, 2, 3)
    plan = fold_plan((2, 2), 3)          # units 1-2 plain, then skip lengths 2, 4
    assert (plan.sources, plan.num_units, plan.fold, plan.start_id, plan.end_id) == ((0, 1, 1, 0), (2, 2), 3, 3, 4)
    with pytest.raises(ValueError, match=r"^`fold` must be <= 3 for num_units=\(2, 2\) \(4 units; the folded window "
                                         r"runs from unit `fold` to the last unit and needs 2 units at least\), "
                                         r"got 4$"):
        fold_plan((2, 2), 4)
    for bad in ((), [], 16, None):
        with pytest.raises(ValueError, match=rf"^`num_units` must be a non-empty tuple of units per stage, got "):
            fold_plan(bad)
    assert fold_plan([2, 2], 1).num_units == (2, 2)


def test_window_slots_and_fields():
    "Inside and after a window (fold 2, units 5-10) two outputs are alive at most; the plan keeps its settings."
    plan = fold_plan((3, 4, 6, 3), fold=2, start_id=5, end_id=10)
    assert (plan.fold, plan.start_id, plan.end_id, plan.n_alive, plan.n_units) == (2, 5, 10, 2, 16)
    assert get_pred(l=8, d=2, start_id=5, end_id=6) == 7 and get_pred(5) == 4 and get_pred(5, 2) == 3


def test_messages_name_the_argument():
    "Each refusal names the argument the caller passed, exactly."
    with pytest.raises(ValueError, match=r"^`unit` must be an integer >= 1, got 0$"): skip_source(0)
    with pytest.raises(ValueError, match=r"^`fold` must be an integer >= 1, got 0$"): fold_plan((3, 4, 6, 3), 0)
    with pytest.raises(ValueError, match=r"^`fold` must be <= 1 for num_units=\(1, 1\) \(2 units; "):
        fold_plan((1, 1), 2)
    assert fold_plan((3, 4, 6, 3)).sources == SKIPS_3463[1]       # the default fold is 1: a plain ResNet


def test_a_plain_resnet_of_any_layout_even_one_unit():
    "fold 1 needs no window: a one-unit layout works (it was refused for a `start_id` nobody passed)."
    plan = fold_plan((1,))
    assert (plan.sources, plan.stages, plan.start_id, plan.end_id, plan.n_alive) == ((0,), (1,), 1, 1, 1)
    assert fold_plan((3, 4, 6, 3)) == fold_plan((3, 4, 6, 3), 1, 1, 16)   # the explicit fold-1 window: the same plan
    assert fold_plan((2,), 1).sources == (0, 1)
    with pytest.raises(ValueError, match=r'`start_id` must be <= 0 for num_units=\(1,\) .* got 1'):
        fold_plan((1,), 1, start_id=1)                                      # a window asked for explicitly: too small
    with pytest.raises(ValueError, match=r'`fold` must be <= 0 for num_units=\(1,\) .* got 2'): fold_plan((1,), 2)


def test_plot_shades_each_stage_over_its_own_units():
    "Stage s spans its units' positions (units numbered from 1; 0 is the stem), each with 0.45 either side."
    from matplotlib.patches import Rectangle
    from fastai_resnetx import plot_topology
    fig = plot_topology('resnetx18', fold=2)
    spans = sorted((round(r.get_x(), 2), round(r.get_x() + r.get_width(), 2)) for r in fig.axes[0].patches
                   if isinstance(r, Rectangle))
    assert spans == [(0.55, 2.45), (2.55, 4.45), (4.55, 6.45), (6.55, 8.45)]   # resnetx18: 2 units a stage
