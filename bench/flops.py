"""Benchmark `model_summary` (meta and real tensors) against FlopCounterMode, fvcore, ptflops, thop and torchinfo.

Run: python bench/flops.py [--reps 3] [--out bench/flops_results.md]
The other tools are only for this benchmark (pip install fvcore ptflops thop torchinfo); a missing one is skipped.
Times are the best of `--reps` runs in this process, at 224px, batch 1, on CPU (or meta where said).
"""
import argparse, contextlib, copy, io, platform, time, warnings
import timm, torch, torchvision
from torch.utils.flop_counter import FlopCounterMode
from fastai_resnetx import model_summary, build_arch, resnetx50

SIZE = (1, 3, 224, 224)

def best_time(f, reps):
    "Best wall time of `reps` calls of `f`, and its last result"
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        res = f()
        times.append(time.perf_counter() - start)
    return min(times), res

def fingerprint(model):
    "What a counting tool must leave as it found: state (BatchNorm stats included), modes, hooks, buffers, attributes"
    return (sorted(model.state_dict().keys()), [v.sum().item() for v in model.state_dict().values() if v.is_floating_point()],
            [m.training for m in model.modules()], sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
            [sorted(vars(m)) for m in model.modules()])

def fcm(model, device):
    "FlopCounterMode alone: MACs"
    x = torch.zeros(SIZE, device=device)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter: model(x)
    return counter.get_total_flops() // 2

def fvcore_macs(model):
    from fvcore.nn import FlopCountAnalysis
    return FlopCountAnalysis(model, torch.zeros(SIZE)).unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()

def ptflops_macs(model, backend):
    from ptflops import get_model_complexity_info
    with contextlib.redirect_stdout(io.StringIO()):
        return get_model_complexity_info(model, SIZE[1:], as_strings=False, print_per_layer_stat=False, backend=backend)[0]

def thop_macs(model):
    from thop import profile
    with contextlib.redirect_stdout(io.StringIO()): return int(profile(model, inputs=(torch.zeros(SIZE),), verbose=False)[0])

def torchinfo_macs(model):
    from torchinfo import summary
    return summary(model, input_size=SIZE, verbose=0, device='cpu').total_mult_adds

TOOLS = {
    'ours, meta':             lambda m: model_summary(m, SIZE).total_macs,
    'ours, cpu':              lambda m: model_summary(m, SIZE, device='cpu').total_macs,
    'FlopCounterMode, meta':  lambda m: fcm(META[id(m)], 'meta'),  # on a copy moved to meta beforehand
    'FlopCounterMode, cpu':   lambda m: fcm(m, 'cpu'),
    'fvcore':                 fvcore_macs,
    'ptflops (pytorch)':      lambda m: ptflops_macs(m, 'pytorch'),
    'ptflops (aten)':         lambda m: ptflops_macs(m, 'aten'),
    'thop':                   thop_macs,
    'torchinfo':              torchinfo_macs,
}

MODELS = {
    'resnet50':          lambda: torchvision.models.resnet50(),
    'mobilenet_v2':      lambda: torchvision.models.mobilenet_v2(),
    'efficientnet_b0':   lambda: torchvision.models.efficientnet_b0(),
    'resnetx50 fold=1':  lambda: resnetx50(fold=1),
    'resnetx50 fold=2':  lambda: resnetx50(fold=2),
    'resnetx50 fold=3':  lambda: resnetx50(fold=3),
    'vit_tiny (timm)':   lambda: timm.create_model('vit_tiny_patch16_224'),  # attention: functional matmuls, no module
}

META = {}  # id of a CPU model -> its copy on meta

def goal(reps):
    "The speed goal: the full summary of resnet152 at 224px on meta, against FlopCounterMode alone"
    with torch.device('meta'): model = torchvision.models.resnet152().eval()
    t_fcm, _ = best_time(lambda: fcm(model, 'meta'), reps)
    t_model, s = best_time(lambda: str(model_summary(model)), reps)
    t_arch, _ = best_time(lambda: str(model_summary(torchvision.models.resnet152)), reps)
    return [f'| FlopCounterMode alone (model already on meta) | {t_fcm:.3f} |',
            f'| `str(model_summary(model))` (model already on meta) | {t_model:.3f} |',
            f'| `str(model_summary(torchvision.models.resnet152))` (built on meta, then counted) | {t_arch:.3f} |']

def main(reps, out):
    warnings.filterwarnings('ignore')
    torch.manual_seed(0)
    lines = [f'# FLOPs counters: MACs and time, 224px, batch 1', '',
             f'`python bench/flops.py --reps {reps}`; torch {torch.__version__}, {platform.processor() or platform.machine()}, '
             f'{torch.get_num_threads()} threads; time = best of {reps} in one process; MACs in millions. '
             '"as found": the model\'s state, modes, hooks and attributes are unchanged after the call.', '']
    lines += ['## Goal: resnet152, full summary on meta', '', '| what | seconds |', '|--|--:|', *goal(reps), '']
    results = {}
    for name, make in MODELS.items():
        model = make().eval()
        META[id(model)] = copy.deepcopy(model).to('meta')
        ref = model_summary(model, SIZE).total_macs
        for tool, f in TOOLS.items():
            before = fingerprint(model)
            try: t, macs = best_time(lambda: f(model), reps)
            except Exception as e: results[name, tool] = (None, None, f'{type(e).__name__}: {str(e)[:60]}'); continue
            results[name, tool] = (t, macs, 'yes' if fingerprint(model) == before else 'no')
            print(f'{name:18} {tool:24} {t:7.3f}s {macs/1e6:10.2f}M  {macs/ref:6.3f}x ours')
        results[name, 'ref'] = ref
    lines += ['## MACs (millions) and seconds per tool', '']
    names = list(MODELS)
    lines += ['| tool | ' + ' | '.join(names) + ' | as found |', '|--|' + '--:|' * len(names) + '--|']
    for tool in TOOLS:
        cells = []
        for name in names:
            t, macs, _ = results[name, tool]
            cells.append('error' if t is None else f'{macs/1e6:,.1f} ({t:.2f}s)')
        found = {results[n, tool][2] for n in names}
        lines.append(f'| {tool} | ' + ' | '.join(cells) + f' | {", ".join(sorted(found))} |')
    lines += ['', '## Ratio to ours (MACs)', '', '| tool | ' + ' | '.join(names) + ' |', '|--|' + '--:|' * len(names)]
    for tool in TOOLS:
        cells = ['-' if results[n, tool][0] is None else f'{results[n, tool][1] / results[n, "ref"]:.4f}' for n in names]
        lines.append(f'| {tool} | ' + ' | '.join(cells) + ' |')
    errors = [f'- {tool} on {name}: {res[2]}' for (name, tool), res in results.items() if tool != 'ref' and res[0] is None]
    if errors: lines += ['', 'Errors:', *errors]
    text = '\n'.join(lines) + '\n'
    print(text)
    if out:
        with open(out, 'w') as f: f.write(text)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=3, help='runs per measurement; the best time is kept')
    p.add_argument('--out', default='bench/flops_results.md', help='Markdown file for the results ("" for none)')
    main(**vars(p.parse_args()))
