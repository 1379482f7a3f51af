"The fold rule of ResNetX: which earlier output each unit adds as its skip. Pure Python, no torch."
from dataclasses import dataclass

from ..checks import check_int as _check_int

__all__ = ['skip_source', 'stage_of', 'stage_input', 'stage_distance', 'FoldPlan', 'fold_plan', 'get_pred',
           'layer_diff']


def _check_window(fold, start_id, end_id):
    _check_int('fold', fold, 1)
    _check_int('start_id', start_id, 1)
    if start_id < fold:
        raise ValueError(f"`start_id` must be >= `fold` ({fold}), got {start_id}")
    if end_id is not None:
        _check_int('end_id', end_id, 1)
        if end_id <= start_id:
            raise ValueError(f"`end_id` must be > `start_id` ({start_id}), got {end_id}")


def skip_source(unit:int, fold:int=1, start_id:int=None, end_id:int=None) -> int:
    "Index of the earlier output (0 = stem) that unit `unit` (1-based) adds as its skip."
    _check_int('unit', unit, 1)
    if start_id is None: start_id = fold
    _check_window(fold, start_id, end_id)
    if end_id is None: end_id = unit
    if fold == 1 or unit < start_id or unit > end_id: return unit - 1
    # inside the folded window the skip length cycles through 2, 4, ..., 2*(fold-1)
    remainder = (unit - 1 - (start_id - fold)) % (fold - 1)
    return unit - 2 * (1 + remainder)


def _check_num_units(num_units):
    if not isinstance(num_units, (tuple, list)) or len(num_units) == 0:
        raise ValueError(f"`num_units` must be a non-empty tuple of units per stage, got {num_units!r}")
    for i, n in enumerate(num_units):
        try: _check_int(f'num_units[{i}]', n, 1)
        except ValueError as e: raise ValueError(f"{e} in {tuple(num_units)} (no empty stage)") from None
    return tuple(num_units)


def stage_of(output:int, num_units:tuple) -> int:
    "Stage (0 = stem, 1.. = the stages of `num_units`) that output `output` belongs to."
    num_units = _check_num_units(num_units)
    total = sum(num_units)
    _check_int('output', output, 0, total)
    if output == 0: return 0
    last = 0
    for stage, n in enumerate(num_units, start=1):
        last += n
        if output <= last: return stage


def stage_distance(unit:int, source:int, num_units:tuple) -> int:
    "How many stage boundaries the skip from output `source` to unit `unit` crosses."
    if source >= unit: raise ValueError(f"`source` ({source}) must come before `unit` ({unit})")
    return stage_of(unit, num_units) - stage_of(source, num_units)


@dataclass(frozen=True)
class FoldPlan:
    "The wiring of a ResNetX, computed once: per unit its stage, skip source and buffer slots."
    num_units: tuple
    fold: int
    start_id: int
    end_id: int
    sources: tuple     # sources[l-1]: the output unit l adds as its skip
    stages: tuple      # stages[l-1]: the stage (1-based) of unit l
    in_slots: tuple    # buffer slot that holds unit l's input x_{l-1}
    skip_slots: tuple  # buffer slot that holds x_src(l)
    out_slots: tuple   # buffer slot unit l writes its output to
    n_alive: int       # most outputs alive at once during a forward pass
    stage_local: bool = False   # skip sources clipped to each stage's input: no skip crosses a stage boundary

    @property
    def n_units(self): return len(self.sources)

    def skips(self):
        "Pairs `(source, unit)` of every skip connection, in unit order."
        return [(s, l) for l, s in enumerate(self.sources, start=1)]


def _allocate_slots(sources):
    "Give every output a buffer slot; a slot is reused as soon as its output has no later reader."
    n = len(sources)
    last_use = {o: o + 1 for o in range(n)}  # output o is the input of unit o+1
    for l, s in enumerate(sources, start=1): last_use[s] = max(last_use[s], l)
    slot_of, free, n_slots = {0: 0}, [], 1
    in_slots, skip_slots, out_slots = [], [], []
    for l in range(1, n + 1):
        in_slots.append(slot_of[l - 1])
        skip_slots.append(slot_of[sources[l - 1]])
        for o in {l - 1, sources[l - 1]}:  # release what unit l was the last reader of
            if last_use[o] == l: free.append(slot_of[o])
        if free: slot = free.pop()
        else: slot, n_slots = n_slots, n_slots + 1
        slot_of[l] = slot
        out_slots.append(slot)
    return tuple(in_slots), tuple(skip_slots), tuple(out_slots), n_slots


def stage_input(unit:int, num_units:tuple) -> int:
    "The output that stage of unit `unit` starts from: the last unit of the previous stage (0: the stem's)."
    return sum(num_units[:stage_of(unit, num_units) - 1])


def fold_plan(num_units:tuple, fold:int=1, start_id:int=None, end_id:int=None, stage_local:bool=False) -> FoldPlan:
    "Validate a layout and compute its whole skip plan (`stage_local`: no skip reaches before its stage's input)."
    if stage_local not in (True, False): raise ValueError(f"`stage_local` must be True or False, got {stage_local!r}")
    plan = _fold_plan(num_units, fold, start_id, end_id)
    if not stage_local: return plan
    sources = tuple(max(s, stage_input(l, plan.num_units)) for l, s in enumerate(plan.sources, start=1))
    return _plan(plan.num_units, plan.fold, plan.start_id, plan.end_id, sources, stage_local=True)


def _fold_plan(num_units:tuple, fold:int, start_id:int, end_id:int) -> FoldPlan:
    num_units = _check_num_units(num_units)
    total = sum(num_units)
    _check_int('fold', fold, 1)
    if fold == 1 and start_id is None and end_id is None:
        # a plain ResNet: each unit adds the previous output, no window to check (a one-unit layout too)
        return _plan(num_units, 1, 1, total, tuple(range(total)))
    if start_id is None and end_id is None and fold >= total:
        raise ValueError(f"`fold` must be <= {total - 1} for num_units={num_units} ({total} units; the folded window "
                         f"runs from unit `fold` to the last unit and needs 2 units at least), got {fold}")
    if start_id is None: start_id = fold
    # `start_id` is checked before `end_id` gets its default, so an error names the argument the caller passed
    _check_window(fold, start_id, None)
    if end_id is None and start_id >= total:
        raise ValueError(f"`start_id` must be <= {total - 1} for num_units={num_units} ({total} units; the folded "
                         f"window runs from `start_id` to the last unit and needs 2 units at least), got {start_id}")
    if end_id is None: end_id = total
    _check_window(fold, start_id, end_id)
    if end_id > total:
        raise ValueError(f"`end_id` must be <= the number of units ({total} for num_units={num_units}), got {end_id}")
    return _plan(num_units, fold, start_id, end_id, tuple(skip_source(l, fold, start_id, end_id)
                                                          for l in range(1, total + 1)))


def _plan(num_units, fold, start_id, end_id, sources, stage_local:bool=False) -> FoldPlan:
    "The `FoldPlan` of a checked layout and window with these skip sources."
    stages = tuple(stage_of(l, num_units) for l in range(1, len(sources) + 1))
    return FoldPlan(num_units, fold, start_id, end_id, sources, stages, *_allocate_slots(sources), stage_local)


def get_pred(l:int, d:int=1, start_id:int=None, end_id:int=None) -> int:
    "`skip_source` under the original ResNetX code's name: the skip source of unit `l` at fold `d`."
    return skip_source(l, d, start_id, end_id)


def layer_diff(cur:int, pred:int, num_units:tuple) -> int:
    "`stage_distance` under the original ResNetX code's name: stages between unit `cur` and its skip source `pred`."
    return stage_distance(cur, pred, num_units)
