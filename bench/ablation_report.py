"Markdown report of bench/ablation.py: summary tables per experiment and every run."


# ------------------------------------------------------------------------------------------------------ Markdown
def _pm(m, s, fmt='{:.2f}', scale=1.):
    if m is None: return 'n/a'
    return f'{fmt.format(m * scale)} ± {fmt.format(s * scale)}'


def _diff_cell(d, scale=100.):
    if d is None: return ''
    ci = '' if d['acc_diff_ci95'] is None else f" [{d['acc_diff_ci95'][0] * scale:+.2f}, {d['acc_diff_ci95'][1] * scale:+.2f}]"
    return f"{d['acc_diff_mean'] * scale:+.2f} ± {d['acc_diff_std'] * scale:.2f}{ci}"


def _wtl(d): return '' if d is None else f"{d['wins']}/{d['ties']}/{d['losses']}"


def _table(header, rows):
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('--' if i == 0 else '--:' for i in range(len(header))) + '|']
    out += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return out


def to_markdown(result):
    meta, runs, an = result['meta'], result['runs'], result['analysis']
    cfg, mach = meta['config'], meta['machine']
    models = {(m['experiment'], m['model']): m for m in an['models']}
    diffs = {(d['experiment'], d['model']): d for d in an['diffs']}
    data = cfg['data'] or 'digits (scikit-learn, 1,797 8x8 images upscaled)' + \
           (f", first {cfg['n_items']}" if cfg['n_items'] else '')
    lines = [f"# ResNetX fold ablation: {cfg['arch']} on {data}, {cfg['size']} px", '',
             f"`{meta['command']}`", '',
             f"{len(runs)} runs ({sum(r['error'] is not None for r in runs)} failed), every one in the JSON; seeds "
             f"{cfg['seeds']}; {cfg['epochs']} epochs, bs {cfg['bs']}, lr {cfg['lr']}; device {mach['device']}"
             f"{' (' + mach['gpu'] + ')' if 'gpu' in mach else ''}, {mach['torch_threads']} torch thread(s), "
             f"{mach['cpu_count']} CPUs ({mach['cpu']}); torch {mach['torch']}, fastai {mach['fastai']}; "
             f"total {meta.get('total_seconds', 0) / 60:.1f} min; load average {mach.get('loadavg_start')} at the "
             f"start, {meta.get('loadavg_end')} at the end.", '',
             'Accuracy and its differences in percentage points; mean ± std over seeds; a difference is paired by '
             'seed (mean ± std of the per-seed differences, [95% t-interval]); W/T/L: seeds where the model was '
             'better/equal/worse. Params and MFLOPs: the model as trained (fastai body + head), one image. '
             'img/s: training images per second, data loading included'
             f"{' (noisy: the CPUs were shared with other jobs)' if mach['device'] == 'cpu' else ''}.", '']
    for note in meta.get('notes', []): lines += [f'Note: {note}', '']

    def model_row(exp, name, extra=()):
        m = models.get((exp, name))
        if m is None: return None
        return [name, *extra, m['n_runs'], f"{m['params']:,}", f"{m['flops'] / 1e6:.2f}",
                _pm(m['acc_mean'], m['acc_std'], scale=100.), _pm(m['loss_mean'], m['loss_std'], '{:.4f}'),
                _pm(m['train_loss_mean'], m['train_loss_std'], '{:.4f}'), _pm(m['ips_mean'], m['ips_std'], '{:.0f}')]

    head = ['model', 'runs', 'params', 'MFLOPs', 'valid acc %', 'valid loss', 'train loss', 'img/s']
    fold_names = [m['model'] for m in an['models'] if m['experiment'] == 'folds']
    if fold_names:
        lines += ['## Folds, random init (`fit_one_cycle`)', '']
        rows = [model_row('folds', n) + [_diff_cell(diffs.get(('folds', n))), _wtl(diffs.get(('folds', n))),
                                         diffs[('folds', n)]['verdict'] if ('folds', n) in diffs else 'baseline']
                for n in fold_names]
        lines += _table(head + ['Δacc vs fold=1', 'W/T/L', 'verdict'], rows) + ['']
    eq_diffs = [d for d in an['diffs'] if d['experiment'] == 'equal_cost']
    if eq_diffs:
        lines += ['## Equal cost: a folded model vs a fold=1 model of matched FLOPs and params', '',
                  'The matched model is the arch at fold=1 with one stage widened, chosen to be the closest to the '
                  'folded model in both FLOPs and parameters; the folded runs are those of the fold table (same seeds).', '']
        rows = []
        for d in eq_diffs:
            m, b = models.get(('folds', d['model'])), models.get(('equal_cost', d['baseline']))
            ov = (b or {}).get('overrides') or {}
            rows.append(model_row('folds', d['model'], [m['fold'], 'as arch']) + [_diff_cell(d), _wtl(d), d['verdict']])
            rows.append(model_row('equal_cost', d['baseline'], [1, str(tuple(ov.get('widths', ())))]) +
                        ['baseline', '', ''])
        lines += _table(['model', 'fold', 'widths'] + head[1:] + ['Δacc vs matched fold=1', 'W/T/L', 'verdict'], rows)
        lines += ['']
    ws = [m for m in an['models'] if m['experiment'] == 'warm_start']
    if ws:
        lines += ['## Warm start from one ResNet checkpoint (`fine_tune`)', '',
                  f"Checkpoint: {meta.get('checkpoint_kind', '')}", '']
        rows = []
        ck = models.get(('checkpoint', f"torchvision {meta.get('resnet')}"))
        if ck and ck['acc_mean'] is not None:
            rows.append(model_row('checkpoint', ck['model'], ['n/a (the checkpoint itself)']) + ['', '', ''])
        for m in ws:
            d = diffs.get(('warm_start', m['model']))
            rows.append(model_row('warm_start', m['model'], [m.get('new_tensors', '')]) +
                        [_diff_cell(d) if d else 'baseline', _wtl(d), d['verdict'] if d else ''])
        lines += _table(['model', 'new (random) tensors'] + head[1:] + ['Δacc vs fold=1', 'W/T/L', 'verdict'], rows)
        lines += ['']
    lines += ['## Every run', '']
    rows = [[r['experiment'], r['model'], r['seed'], 'failed: ' + r['error'] if r['error'] else
             f"{r['valid_accuracy'] * 100:.2f}", '' if r['error'] else f"{r['valid_loss']:.4f}",
             '' if r['error'] else f"{r['train_loss']:.4f}", '' if r['error'] else f"{r['images_per_s']:.0f}",
             '' if r['error'] else f"{r['train_seconds']:.1f}"] if r['error'] or r['valid_accuracy'] is not None else
            [r['experiment'], r['model'], r['seed'], 'not trained', '', '', '', '']   # a random checkpoint, saved as is
            for r in runs]
    lines += _table(['experiment', 'model', 'seed', 'valid acc %', 'valid loss', 'train loss', 'img/s', 'train s'], rows)
    return '\n'.join(lines) + '\n'


