"""Does folding help? The paired study behind `resnetx study`: every arm trained on the same seeds, each run kept.

An arm is one model: fold 1 (a plain ResNet), a fold > 1 with its cross-stage skips, the same fold stage-local (no skip
crosses a stage boundary), or fold 1 widened to a folded model's FLOPs (equal cost). For seed `s` every arm sees the
same data order and augmentation (the loaders' random numbers come from `s` alone) and starts from the same random
state when its model is built. Each finished run is one line of `results.jsonl`, so a stopped study resumes where it
stopped; a changed setting is refused, never mixed in."""
import json, math, os, platform, stat, time, warnings
from dataclasses import dataclass, asdict, field
from pathlib import Path

from ..checks import check_int, check_float, check_choice
from .idx_data import load_idx_data

__all__ = ['STUDY_DEFAULTS', 'StudySettings', 'Arm', 'study_arms', 'match_width', 'read_results', 'run_study',
           'cpu_kind']

STUDY_DEFAULTS = dict(data='fashion-mnist', arch='resnetx_small', folds=(1, 2, 3), seeds=5, epochs=5, bs=256, lr=1e-2,
                      pad=0, flip=True, erase=0.)
RESULTS, SETTINGS = 'results.jsonl', 'study.json'


@dataclass(frozen=True)
class Arm:
    "One model of the study: its name, fold, whether stage-local, and widths (None: the arch's)."
    name: str
    fold: int = 1
    stage_local: bool = False
    widths: tuple = None

    def overrides(self) -> dict:
        "The config overrides that make this arm's model from the study's arch."
        o = dict(fold=self.fold)
        if self.stage_local: o['stage_local'] = True
        if self.widths is not None: o['widths'] = tuple(self.widths)
        return o


@dataclass
class StudySettings:
    "What a study trains: the data, the arch and its arms, seeds, and the one training recipe every run follows."
    data: str = STUDY_DEFAULTS['data']
    arch: str = STUDY_DEFAULTS['arch']
    folds: tuple = STUDY_DEFAULTS['folds']
    seeds: int = STUDY_DEFAULTS['seeds']
    epochs: int = STUDY_DEFAULTS['epochs']
    bs: int = STUDY_DEFAULTS['bs']
    lr: float = STUDY_DEFAULTS['lr']
    pad: int = STUDY_DEFAULTS['pad']
    flip: bool = STUDY_DEFAULTS['flip']
    erase: float = STUDY_DEFAULTS['erase']
    stage_local: bool = False
    equal_cost: bool = False
    warm: str = None              # a checkpoint of the arch at fold 1 every arm starts from, then fastai's fine-tuning

    def checked(self):
        "These settings, or a `ValueError` naming the first bad one and what is allowed."
        from ..model.config import RESNETX_CONFIGS
        check_choice('arch', self.arch, sorted(RESNETX_CONFIGS))
        self.folds = tuple(sorted({check_int('folds', f, 1) for f in self.folds} | {1}))   # fold 1 is the baseline
        check_int('seeds', self.seeds, 1)
        check_int('epochs', self.epochs, 1)
        check_int('bs', self.bs, 2)
        check_float('lr', self.lr, 0, 10, open_min=True, open_max=True)
        from .tensor_data import Augment
        Augment(self.pad, self.flip, self.erase)
        for name in ('stage_local', 'equal_cost'): check_choice(name, getattr(self, name), (True, False))
        if self.warm is not None: self._check_warm()
        return self

    def _check_warm(self):
        self.warm = str(Path(self.warm).expanduser().absolute())
        if not Path(self.warm).is_file():
            raise ValueError(f"`warm` {self.warm!r} is not a file: pass a checkpoint of {self.arch} at fold 1 "
                             f"(torch.save(model.state_dict(), ...)), or a ResNet's for a ResNet layout")
        if self.equal_cost:
            raise ValueError("`equal_cost` widens fold 1, and a checkpoint of the arch cannot start a wider model: "
                             "a warm-started study takes one or the other")

    def recipe(self) -> dict:
        "The settings every run of the study must share: a study folder holds runs of one recipe only."
        from .warm_start import warm_digest
        return dict(data=str(self.data), arch=self.arch, epochs=self.epochs, bs=self.bs, lr=self.lr, pad=self.pad,
                    flip=self.flip, erase=self.erase, **({'warm': warm_digest(self.warm)} if self.warm else {}))


def cpu_kind() -> str:
    "The CPU's model name and vector extensions that matter to torch (AVX2, AVX-512 bf16, AMX), in a few words."
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name') and name in ('', platform.machine(), platform.processor()):
                name = line.split(':', 1)[1].strip()
            if line.startswith('flags'): flags = set(line.split(':', 1)[1].split())
    except OSError: pass
    ext = [e for e, f in (('avx2', 'avx2'), ('avx512_bf16', 'avx512_bf16'), ('amx', 'amx_tile')) if f in flags]
    return f"{name} ({os.cpu_count()} cores{', ' + ', '.join(ext) if ext else ''})"


def _cost(arch:str, in_chans:int, size:tuple, n_out:int, **overrides) -> tuple:
    "(params, FLOPs) of the model fastai's `vision_learner` builds for `arch` with `overrides`, counted on meta."
    import torch
    from fastai.vision.all import create_vision_model
    from ..integration.fastai_meta import resnetx_arch
    from ..inspection.flops import model_summary
    with torch.device('meta'):
        model = create_vision_model(resnetx_arch(arch, **overrides), n_out, pretrained=False, n_in=in_chans)
    s = model_summary(model, input_size=(1, in_chans, *size), device='meta')
    return s.total_params, s.total_flops


def match_width(arch:str, target_flops:int, in_chans:int, size:tuple, n_out:int) -> tuple:
    "Widths of `arch` at fold 1, every stage scaled by one factor, whose FLOPs are closest to `target_flops`."
    from ..model.config import RESNETX_CONFIGS
    base = RESNETX_CONFIGS[arch].widths
    scaled = lambda w0: tuple(max(1, round(w * w0 / base[0])) for w in base)   # the first stage one channel a step
    flops = lambda w0: _cost(arch, in_chans, size, n_out, widths=scaled(w0))[1]
    step = 1 if flops(base[0]) < target_flops else -1
    best = base[0]
    for w0 in range(base[0] + step, 0 if step < 0 else 4 * base[0], step):
        if abs(flops(w0) - target_flops) >= abs(flops(best) - target_flops): break   # moving away again
        best = w0
    return scaled(best)


def study_arms(s:StudySettings, in_chans:int=1, size:tuple=(28, 28), n_out:int=10) -> tuple:
    "(arms, notes): each fold, each fold > 1 stage-local, fold 1 at the largest fold's FLOPs; no model runs twice."
    from ..model.config import RESNETX_CONFIGS
    cfg = RESNETX_CONFIGS[s.arch]
    arms = [Arm(f'fold{f}', f) for f in s.folds]
    if s.stage_local: arms += [Arm(f'fold{f}-local', f, True) for f in s.folds if f > 1]
    notes, kept, plans = [], [], {}
    for arm in arms:   # a fold the layout cannot take is refused here, before any run
        plan = cfg.replace(**arm.overrides()).plan().sources
        if plan in plans:
            notes.append(f"{arm.name} is the same model as {plans[plan]} (the same skip sources {list(plan)}): "
                         f"run once, as {plans[plan]}")
        else:
            plans[plan] = arm.name
            kept.append(arm)
    if s.equal_cost and max(s.folds) > 1:
        target = _cost(s.arch, in_chans, size, n_out, fold=max(s.folds))[1]
        widths = match_width(s.arch, target, in_chans, size, n_out)
        if widths == cfg.widths:
            own = _cost(s.arch, in_chans, size, n_out, fold=1)[1]
            notes.append(f"equal cost: fold 1 ({own / 1e6:.2f} MFLOPs) is already the closest to fold {max(s.folds)} "
                         f"({target / 1e6:.2f} MFLOPs) that a change of width can make: fold1 is the equal-cost arm")
        else: kept.append(Arm('fold1-wide', 1, False, widths))
    return kept, notes


def read_results(out:Path) -> list:
    "The finished runs in `out`'s results file (one JSON object a line); a damaged line is an error naming it."
    path = Path(out) / RESULTS
    if not path.exists(): return []
    runs = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip(): continue
        try: runs.append(json.loads(line))
        except ValueError:
            raise ValueError(f"{str(path)!r} line {i} is not a JSON record; the study cannot resume from it") from None
    return runs


def _check_recipe(out:Path, recipe:dict):
    "Refuse a study folder whose runs followed another recipe (the differences named); a new folder takes `recipe`."
    path = Path(out) / SETTINGS
    if not path.exists(): return
    try: old = json.loads(path.read_text())['recipe']
    except (ValueError, KeyError, TypeError): raise ValueError(f"{str(path)!r} is damaged: start a new study") from None
    changed = {k: (old.get(k), v) for k, v in recipe.items() if old.get(k) != v}
    if changed:
        what = ', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in changed.items())
        raise ValueError(f"`--out` {str(out)!r} holds a study with other settings ({what}): a study's runs must share "
                         f"them; use another --out for the new settings")


def _versions() -> dict:
    import torch, fastai
    from importlib.metadata import version
    return dict(fastai_resnetx=version('fastai_resnetx'), torch=torch.__version__, fastai=fastai.__version__)


def run_one(data, s:StudySettings, arm:Arm, seed:int) -> dict:
    "Train `arm` on seed `seed` (the study's recipe) and test it on the whole test set: the run's record."
    import torch
    from fastai.vision.all import set_seed
    from .tensor_data import idx_dls, Augment
    from .train import make_learner, fit_recipe
    from .warm_start import warm_arch
    from ..integration.precision import pick_precision
    from ..integration.fastai_meta import resnetx_arch
    from ..inspection.flops import model_summary
    from ..model.resnetx import num_params
    dls = idx_dls(data, bs=s.bs, augment=Augment(s.pad, s.flip, s.erase), seed=seed)
    precision = pick_precision(s.arch, data.size[0])
    set_seed(seed)   # the same random state for every arm's model
    arch = resnetx_arch(s.arch, **arm.overrides())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # a warm start's missing projections: in the study's notes, once
        learn = make_learner(dls, warm_arch(arch, s.warm) if s.warm else arch, bool(s.warm), precision=precision)
    t0 = time.time()
    with learn.no_bar(), learn.no_logging():
        fit_recipe(learn, s.epochs, s.lr, pretrained=bool(s.warm))
        fit_s = time.time() - t0
        loss, acc = (float(v) for v in learn.validate())   # the validation loader is the whole test set
    if not math.isfinite(loss): raise ValueError(f"arm {arm.name} seed {seed}: the test loss is {loss}")
    flops = model_summary(learn.model, input_size=(1, 1, *data.size), device='meta').total_flops
    return dict(arm=arm.name, **{k: v for k, v in asdict(arm).items() if k != 'name'}, seed=seed,
                params=num_params(learn.model), flops=flops, test_accuracy=acc, test_loss=loss,
                n_test=len(dls.valid_ds), fit_seconds=round(fit_s, 1), precision=precision,
                threads=torch.get_num_threads(), cpu=cpu_kind(), **_versions(), recipe=s.recipe())


def _check_arms(runs:list, arms:list):
    "Refuse finished runs of an arm name that now means another model (the study's arms must not change meaning)."
    by_name = {a.name: a for a in arms}
    for r in runs:
        a = by_name.get(r['arm'])
        if a is None: continue
        widths = None if r.get('widths') is None else tuple(r['widths'])
        if (r.get('fold'), r.get('stage_local'), widths) != (a.fold, a.stage_local, a.widths):
            raise ValueError(f"arm {a.name} of this study was run as fold {r.get('fold')}, stage_local "
                             f"{r.get('stage_local')}, widths {widths}; now it is {a}: use another --out")


def _append(path:Path, record:dict):
    "Add one finished run to the results file, on disk before the next run starts (a crash loses no finished run)."
    # not through a link, and no wait on a pipe named like it (non-blocking open, then a regular file only)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{str(path)!r} is not a regular file: move it away")
        os.write(fd, (json.dumps(record, allow_nan=False) + '\n').encode())
        os.fsync(fd)
    finally: os.close(fd)


def _eta(seconds:float) -> str:
    m = round(seconds / 60)
    return f'{m // 60} h {m % 60:02d} min' if m >= 60 else f'{m} min'


def write_report(out:Path, runs:list, folder, title:str, notes=()):
    "report.md and study.png from the finished runs, in place together (through `folder`, the study's hold on `out`)."
    from matplotlib import pyplot as plt
    from .study_report import report_markdown, plot_study
    if not runs: return None
    text = report_markdown(runs, title, notes)
    folder.write_text('report.md', text)
    fig = plot_study(runs, title)
    with folder.open_new('study.png') as f: fig.savefig(f, format='png', dpi=100)
    plt.close(fig)
    folder.commit(['report.md', 'study.png'], also=[RESULTS, SETTINGS])
    return text


def run_study(out, settings:StudySettings=None, report_only:bool=False, log=print) -> list:
    "Run (or resume) the study in folder `out`: each missing (arm, seed) run, then the report; the finished runs."
    from resnetx_cli.runs import check_out_folder, OutputFolder
    out = Path(out)
    check_out_folder(out, None, 'resnetx study')
    with OutputFolder(out, 'resnetx study') as folder:
        if folder.finished: log(folder.finished_note())
        if report_only: return _report_again(out, folder)
        s = settings.checked()
        _check_recipe(out, s.recipe())
        data = load_idx_data(s.data)
        arms, notes = study_arms(s, 1, data.size, len(data.classes))
        if s.warm:
            from .warm_start import check_warm
            notes += check_warm(s.arch, arms, s.warm)
        runs = read_results(out)
        _check_arms(runs, arms)
        folder.write_text(SETTINGS, json.dumps(dict(recipe=s.recipe(), arms=[asdict(a) for a in arms], notes=notes,
                                                    seeds=s.seeds, data_source=data.source), indent=2))
        folder.commit([SETTINGS], also=[RESULTS])
        done = {(r['arm'], r['seed']) for r in runs}
        todo = [(a, seed) for seed in range(s.seeds) for a in arms if (a.name, seed) not in done]
        wanted = {(a.name, i) for a in arms for i in range(s.seeds)}
        log(f"study in {out}: {len(arms)} arms x {s.seeds} seeds; {len(done & wanted)} "
            f"runs done, {len(todo)} to run ({', '.join(a.name for a in arms)}); data {data.source}")
        for note in notes: log(f"note: {note}")
        _run_todo(out, data, s, todo, runs, log)
        mine = [r for r in runs if r['arm'] in {a.name for a in arms} and r['seed'] < s.seeds]
        return mine, write_report(out, mine, folder, _title(s.recipe(), mine), notes)


def _report_again(out:Path, folder) -> tuple:
    "(runs, report) from the results already in `out`, without training."
    runs = read_results(out)
    if not runs: raise ValueError(f"`--report` {str(out)!r} holds no finished runs")
    try: notes = json.loads((out / SETTINGS).read_text()).get('notes', [])
    except (OSError, ValueError, AttributeError): notes = []
    return runs, write_report(out, runs, folder, _title(runs[0]['recipe'], runs), notes)


def _run_todo(out:Path, data, s:StudySettings, todo:list, runs:list, log):
    "Train each (arm, seed) of `todo`, appending its result to `out`'s results file (and `runs`) as it finishes."
    t0 = time.time()
    for i, (arm, seed) in enumerate(todo, start=1):
        try: rec = run_one(data, s, arm, seed)
        except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM: the front door prints where the study stopped
            e.kept = (f"during run {arm.name} seed {seed}; the {len(runs)} finished runs are kept in "
                      f"{out / RESULTS}: the same command resumes")
            raise
        _append(out / RESULTS, rec)
        runs.append(rec)
        eta = (time.time() - t0) / i * (len(todo) - i)
        log(f"[{i}/{len(todo)}] {arm.name} seed {seed}: test accuracy {100 * rec['test_accuracy']:.2f}% "
            f"(loss {rec['test_loss']:.4f}) in {rec['fit_seconds'] / 60:.1f} min; ETA {_eta(eta)}")


def _title(recipe:dict, runs:list) -> str:
    aug = ', '.join(n for n, on in (('crop', recipe.get('pad')), ('flip', recipe.get('flip')),
                                     ('erasing', recipe.get('erase'))) if on) or 'no augmentation'
    warm = f", warm start ({recipe['warm']})" if recipe.get('warm') else ''
    return (f"{recipe['arch']} on {Path(str(recipe['data'])).name}, {recipe['epochs']} epochs ({aug}), "
            f"{len({r['seed'] for r in runs})} seeds{warm}")
