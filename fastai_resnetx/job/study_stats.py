"The study's statistics: per-arm mean and standard deviation, and paired-by-seed differences with a 95% t interval."
import math, statistics

__all__ = ['mean_std', 't95', 'arm_summary', 'paired_diff']


def mean_std(xs) -> tuple:
    "(mean, sample standard deviation) of `xs`; the deviation is 0 for one value, both None for none."
    xs = list(xs)
    if not xs: return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.)


def t95(n:int) -> float:
    "The two-sided 95% quantile of Student's t with `n - 1` degrees of freedom (n pairs); NaN below 2."
    if n < 2: return math.nan
    from scipy.stats import t
    return float(t.ppf(0.975, n - 1))


def arm_summary(runs:list, arm:str) -> dict:
    "An arm's runs summed up: seeds, params, FLOPs, test accuracy and loss (mean, std), mean seconds."
    rs = [r for r in runs if r['arm'] == arm]
    if not rs: return None
    acc, acc_sd = mean_std(r['test_accuracy'] for r in rs)
    loss, loss_sd = mean_std(r['test_loss'] for r in rs)
    return dict(arm=arm, n=len(rs), params=rs[0]['params'], flops=rs[0]['flops'], acc_mean=acc, acc_std=acc_sd,
                loss_mean=loss, loss_std=loss_sd, seconds=statistics.fmean(r['fit_seconds'] for r in rs))


def paired_diff(runs:list, arm:str, baseline:str) -> dict:
    "`arm` minus `baseline` in test accuracy, paired by seed: mean, std, 95% t interval, wins/ties/losses."
    a = {r['seed']: r['test_accuracy'] for r in runs if r['arm'] == arm}
    b = {r['seed']: r['test_accuracy'] for r in runs if r['arm'] == baseline}
    seeds = sorted(set(a) & set(b))
    if not seeds: return None
    d = [a[s] - b[s] for s in seeds]
    m, sd = mean_std(d)
    half = t95(len(d)) * sd / math.sqrt(len(d))
    ci = None if math.isnan(half) else (m - half, m + half)
    return dict(arm=arm, baseline=baseline, n=len(d), seeds=seeds, diffs=d, mean=m, std=sd, ci95=ci,
                wins=sum(x > 0 for x in d), ties=sum(x == 0 for x in d), losses=sum(x < 0 for x in d))
