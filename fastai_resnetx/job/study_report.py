"The study's report: a markdown table of every arm against fold 1, and a plot of accuracy against FLOPs."
from .study_stats import arm_summary, paired_diff

__all__ = ['report_rows', 'report_markdown', 'plot_study']

BASELINE = 'fold1'


def _arm_order(runs:list) -> list:
    "Arms in the order they first appear in the results (fold 1 first)."
    names = list(dict.fromkeys(r['arm'] for r in runs))
    return sorted(names, key=lambda n: (n != BASELINE, names.index(n)))


def report_rows(runs:list) -> list:
    "One row per arm: its summary and its paired difference to fold 1 (None for fold 1 itself)."
    return [dict(**arm_summary(runs, a), diff=None if a == BASELINE else paired_diff(runs, a, BASELINE))
            for a in _arm_order(runs)]


def _pct(x:float, sign:bool=False) -> str: return f"{100 * x:{'+' if sign else ''}.2f}"


def _diff_cells(d) -> list:
    if d is None: return ['', '', '']
    ci = '' if d['ci95'] is None else f"[{_pct(d['ci95'][0], True)}, {_pct(d['ci95'][1], True)}]"
    return [_pct(d['mean'], True), ci, f"{d['wins']}/{d['losses']}" + (f" ({d['ties']} ties)" if d['ties'] else '')]


def report_markdown(runs:list, title:str='', notes:list=()) -> str:
    "The study's table: per arm params, MFLOPs, test accuracy mean ± std over seeds, paired difference to fold 1."
    header = ['arm', 'seeds', 'params', 'MFLOPs', 'test accuracy % (mean ± std)', 'Δ vs fold 1 (points)',
              '95% t interval', 'wins/losses', 'min per run']
    lines = [f'## {title}', ''] if title else []
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    for r in report_rows(runs):
        cells = [r['arm'], str(r['n']), f"{r['params'] / 1e6:.3f}M", f"{r['flops'] / 1e6:.1f}",
                 f"{_pct(r['acc_mean'])} ± {_pct(r['acc_std'])}", *_diff_cells(r['diff']), f"{r['seconds'] / 60:.1f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines + [''] + [f'- {n}' for n in notes]) + '\n'


def plot_study(runs:list, title:str=''):
    "Accuracy against MFLOPs: each arm's mean with a ±std error bar, and each seed's runs joined by a thin line."
    from matplotlib import pyplot as plt
    rows = report_rows(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = {r['arm']: r['flops'] / 1e6 for r in rows}
    for seed in sorted({r['seed'] for r in runs}):
        pts = sorted((x[r['arm']], 100 * r['test_accuracy']) for r in runs if r['seed'] == seed)
        ax.plot(*zip(*pts), color='grey', alpha=0.35, lw=0.8, marker='.', ms=3)
    for r in rows:
        ax.errorbar(x[r['arm']], 100 * r['acc_mean'], yerr=100 * r['acc_std'], fmt='o', capsize=4, label=r['arm'])
    ax.set_xlabel('MFLOPs per image (forward)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(title or 'accuracy against cost: mean ± std per arm; grey: one seed')
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
