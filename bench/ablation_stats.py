"Statistics of bench/ablation.py: per-model mean and std, paired-by-seed differences with a 95% t-interval."
import math, statistics


# ---------------------------------------------------------------------------------------------------- statistics
def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs: return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.)


def _t95(n):
    "Two-sided 95% Student t quantile for n-1 degrees of freedom."
    if n < 2: return math.nan
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, n - 1))
    except ImportError:
        return {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 1.96)


def summarise(runs):
    "Per (experiment, model): mean and std of the metrics over its successful runs."
    groups = {}
    for r in runs:
        if r['error'] is None: groups.setdefault((r['experiment'], r['model']), []).append(r)
    rows = []
    for (exp, model), rs in groups.items():
        row = dict(experiment=exp, model=model, fold=rs[0]['fold'], n_runs=len(rs), params=rs[0]['params'],
                   flops=rs[0]['flops'], overrides=rs[0]['overrides'])
        for key, name in (('valid_accuracy', 'acc'), ('valid_loss', 'loss'), ('train_loss', 'train_loss'),
                          ('images_per_s', 'ips')):
            row[f'{name}_mean'], row[f'{name}_std'] = _mean_std([r[key] for r in rs])
        if exp == 'warm_start': row['new_tensors'] = rs[0].get('new_tensors')
        rows.append(row)
    return rows


def paired_diff(runs, experiment, model, baseline, model_experiment=None):
    "`model` minus `baseline`, paired by seed: accuracy and loss differences, their spread, CI and wins/ties/losses."
    by = lambda exp, m: {r['seed']: r for r in runs if r['experiment'] == exp and r['model'] == m and r['error'] is None}
    a, b = by(model_experiment or experiment, model), by(experiment, baseline)
    seeds = sorted(set(a) & set(b))
    if not seeds: return None
    d_acc = [a[s]['valid_accuracy'] - b[s]['valid_accuracy'] for s in seeds]
    d_loss = [a[s]['valid_loss'] - b[s]['valid_loss'] for s in seeds]
    m, sd = _mean_std(d_acc)
    lm, lsd = _mean_std(d_loss)
    half = _t95(len(seeds)) * sd / math.sqrt(len(seeds)) if len(seeds) > 1 else math.nan
    ci = [m - half, m + half] if not math.isnan(half) else None
    if ci is None: verdict = 'too few seeds to judge'
    elif ci[0] <= 0 <= ci[1]: verdict = 'no difference within noise'
    else: verdict = f'{model} {"better" if m > 0 else "worse"} (95% CI excludes 0)'
    return dict(experiment=experiment, model=model, baseline=baseline, n_pairs=len(seeds), seeds=seeds,
                acc_diff_mean=m, acc_diff_std=sd, acc_diff_ci95=ci, loss_diff_mean=lm, loss_diff_std=lsd,
                wins=sum(d > 0 for d in d_acc), ties=sum(d == 0 for d in d_acc), losses=sum(d < 0 for d in d_acc),
                verdict=verdict)


def analyse(runs, folds, equal_cost_pairs):
    diffs = []
    for f in folds:
        if f == 1: continue
        for exp in ('folds', 'warm_start'):
            d = paired_diff(runs, exp, f'fold={f}', 'fold=1')
            if d: diffs.append(d)
    for folded, matched in equal_cost_pairs:
        d = paired_diff(runs, 'equal_cost', folded, matched, model_experiment='folds')
        if d: diffs.append(d)
    return dict(models=summarise(runs), diffs=diffs)


