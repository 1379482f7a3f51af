"The fold picture: every unit in order, every skip connection as an arc, identity and projection skips told apart."
import matplotlib
from matplotlib import pyplot as plt
from matplotlib.patches import Arc, Patch
from matplotlib.lines import Line2D
from torch import nn

from ..model.resnetx import ResNetX
from ..model.config import RESNETX_CONFIGS
from ..inspection.build import build_arch

__all__ = ['skip_kinds', 'plot_topology', 'plot_confusion_matrix']

_COLORS = {'identity': '#2b8cbe', 'projection': '#e34a33'}


def _as_resnetx(model_or_arch, **overrides) -> ResNetX:
    if isinstance(model_or_arch, ResNetX):
        if overrides: raise ValueError(f"config overrides {sorted(overrides)} need an arch, not a built model")
        return model_or_arch
    name = model_or_arch if isinstance(model_or_arch, str) else getattr(model_or_arch, '__name__', None)
    if name not in RESNETX_CONFIGS:
        raise ValueError(f"`model_or_arch` must be a ResNetX, a ResNetX arch or one of {sorted(RESNETX_CONFIGS)}, "
                         f"got {model_or_arch!r}")
    return build_arch(model_or_arch, **overrides)   # the one way every tool builds an arch: random weights, no download


def skip_kinds(model:ResNetX) -> list:
    "`(source, unit, kind)` for every skip of `model`, kind 'identity' or 'projection' (its shortcut module)."
    return [(src, l, 'identity' if isinstance(unit.shortcut, nn.Identity) else 'projection')
            for (src, l), unit in zip(model.plan.skips(), model.units)]


def plot_topology(model_or_arch, figsize=None, dpi:int=100, out=None, title:str=None, **overrides):
    "Draw a ResNetX's units and skips (arcs above the chain); returns the figure, with `fig.skips` as drawn."
    model = _as_resnetx(model_or_arch, **overrides)
    plan, skips = model.plan, skip_kinds(model)
    n = plan.n_units
    figsize = figsize or (max(8., 0.5 * n + 2), 3.2)
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    _draw_chain(ax, plan.num_units)
    drawn = []
    for src, l, kind in skips:
        span = l - src
        arc = Arc(((src + l) / 2, 0), span, 0.45 * span, theta1=0, theta2=180, lw=1.4, color=_COLORS[kind],
                  ls='-' if kind == 'identity' else '--', zorder=2)
        ax.add_patch(arc)
        drawn.append((src, l, kind))
    top = 0.25 * max(l - s for s, l, _ in skips) + 0.4
    ax.set_xlim(-0.8, n + 0.8)
    ax.set_ylim(-1.35, top)
    ax.set_yticks([])
    ax.set_xticks(range(n + 1))
    ax.tick_params(axis='x', labelsize=7)
    for side in ('left', 'right', 'top'): ax.spines[side].set_visible(False)
    cfg = model.cfg
    ax.set_title(title or f'ResNetX {cfg.unit} {cfg.num_units}, fold={cfg.fold}, window {plan.start_id}..{plan.end_id}',
                 fontsize=10)
    ax.legend(handles=[Line2D([], [], color=_COLORS['identity'], label='identity skip'),
                       Line2D([], [], color=_COLORS['projection'], ls='--', label='projection skip (1x1 conv + BN)')],
              loc='lower center', ncol=2, fontsize=7, frameon=False)
    fig.skips = drawn
    if out is not None: fig.savefig(out, dpi=dpi)
    return fig


def _draw_chain(ax, num_units):
    "The stem and units as dots on the main path, each stage a shaded span."
    start, n = 1, sum(num_units)
    for s, k in enumerate(num_units, start=1):
        a, b = start, start + k - 1
        ax.axvspan(a - 0.45, b + 0.45, color='0.93' if s % 2 else '0.86', zorder=0)
        ax.text((a + b) / 2, -0.55, f'stage {s}', ha='center', va='top', fontsize=8)
        start += k
    ax.plot(range(n + 1), [0] * (n + 1), color='0.3', lw=1, zorder=1)  # the main path x_{l-1} -> unit l
    ax.scatter(range(n + 1), [0] * (n + 1), s=36, color='0.15', zorder=3)
    ax.text(0, -0.55, 'stem', ha='center', va='top', fontsize=8)


def plot_confusion_matrix(predicted, actual, vocab, figsize=(6, 6), dpi:int=100):
    "The confusion matrix of class indices `predicted` vs `actual` (rows: actual), counts written in the cells."
    import numpy as np
    n = len(vocab)
    cm = np.zeros((n, n), dtype=int)
    np.add.at(cm, (np.asarray(actual, dtype=int), np.asarray(predicted, dtype=int)), 1)
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    ax.imshow(cm, cmap='Blues')
    for i, j in np.ndindex(cm.shape):
        ax.text(j, i, cm[i, j], ha='center', va='center', color='white' if cm[i, j] > cm.max() / 2 else 'black')
    ax.set_xticks(range(n), [str(v) for v in vocab], rotation=90)
    ax.set_yticks(range(n), [str(v) for v in vocab])
    ax.set_xlabel('Predicted')
    ax.set_ylabel('Actual')
    ax.set_title(f'Confusion matrix ({cm.sum()} images)')
    fig.tight_layout()
    fig.confusion = cm
    return fig
