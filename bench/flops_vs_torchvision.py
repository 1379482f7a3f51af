"""`model_summary` against torchvision's published `_ops` (GMACs) for every torchvision weights entry.

Run: python bench/flops_vs_torchvision.py [--out bench/flops_vs_torchvision.md] [--only NAME ...]
Each model is built by name with random weights (never downloaded) and counted at the input torchvision measured
`_ops` on (its test_extended_models.py / common_extended_utils.py): classification at the weights' crop size,
segmentation at 520 px with `aux_loss` as the weights build it, video as 16 frames at the crop size, optical flow
as two 512 px frames, detection at torchvision's per-model size. The time is one `model_summary(name, size)` call,
build included, in this process (best of `--reps` where it counts on meta). Quantized weights are left out: torchvision copies their `_ops` from the float model.
"""
import argparse, inspect, os, platform, time, warnings
import torch, torchvision
from torchvision import models
from fastai_resnetx import model_summary

DETECTION_SIZES = {  # torchvision's test/test_extended_models.py: detection_models_input_dims
    'fasterrcnn_mobilenet_v3_large_320_fpn': 320, 'fasterrcnn_mobilenet_v3_large_fpn': 800, 'fasterrcnn_resnet50_fpn': 800,
    'fasterrcnn_resnet50_fpn_v2': 800, 'fcos_resnet50_fpn': 800, 'keypointrcnn_resnet50_fpn': 1333,
    'maskrcnn_resnet50_fpn': 800, 'maskrcnn_resnet50_fpn_v2': 800, 'retinanet_resnet50_fpn': 800,
    'retinanet_resnet50_fpn_v2': 800, 'ssd300_vgg16': 300, 'ssdlite320_mobilenet_v3_large': 320}

FAMILIES = {'classification': models, 'segmentation': models.segmentation, 'video': models.video,
            'optical flow': models.optical_flow, 'detection': models.detection}

def input_of(family, name, weights):
    "The input size torchvision measured `_ops` on, and the builder keywords its weights imply"
    kwargs = {'aux_loss': True} if 'aux_loss' in inspect.signature(models.get_model_builder(name)).parameters else {}
    if name.startswith('vit_'): kwargs['image_size'] = weights.meta['min_size'][0]   # as torchvision builds its SWAG ViTs
    if family == 'classification': return [(1, 3, *_pair(weights.transforms().crop_size))], kwargs
    if family == 'segmentation': return [(1, 3, 520, 520)], kwargs   # 512 px resized to 520 by the weights' transforms
    if family == 'video': return [(1, 3, 16, *_pair(weights.transforms().crop_size))], kwargs
    if family == 'optical flow': return [(1, 3, 512, 512)] * 2, kwargs
    s = DETECTION_SIZES[name]
    return [(1, 3, s, s)], kwargs

def _pair(s): return tuple(s) * (2 // len(s))

def entries(only=None):
    "(family, builder name, weights entry) for every torchvision weights entry"
    for family, module in FAMILIES.items():
        for name in models.list_models(module=module):
            if only and name not in only: continue
            for w in models.get_model_weights(name): yield family, name, w

def count(name, sizes, kwargs, reps):
    "Ours in GMACs, the best of `reps` call times (one where meta can't count it), device, why not meta (or the error)"
    times = []
    for _ in range(reps):
        start, cpu = time.perf_counter(), time.process_time()
        try: s = model_summary(name, sizes[0] if len(sizes) == 1 else sizes, **kwargs)
        except Exception as e: return None, (time.perf_counter() - start, 0), '-', f'{type(e).__name__}: {str(e)[:100]}'
        times.append((time.perf_counter() - start, time.process_time() - cpu))
        if s.device != 'meta': break
    return s.total_macs / 1e9, min(times), s.device, s.fallback or ''

def main(out, only, reps):
    warnings.filterwarnings('ignore')
    rows, cache = [], {}
    for family, name, w in entries(only):
        sizes, kwargs = input_of(family, name, w)
        key = (name, tuple(sizes), tuple(kwargs.items()))
        if key not in cache: cache[key] = count(name, sizes, kwargs, reps)
        macs, secs, device, note = cache[key]
        ops = w.meta['_ops']
        status = 'failed' if macs is None else 'exact' if round(macs, 3) == ops else 'differs'
        rows.append((family, str(w).replace('_Weights.', '.'), ' + '.join('x'.join(map(str, s)) for s in sizes), macs, ops,
                     status, secs, device, note))
        print(f'{family:14} {rows[-1][1]:58} {rows[-1][2]:22} {"-" if macs is None else f"{macs:.3f}":>10} {ops:>10.3f} '
              f'{status:8} {secs[0]:6.2f}s {secs[1]:6.2f}s {device} {note[:60]}', flush=True)
    write(rows, out)

def write(rows, out):
    load = os.getloadavg()[0]
    n = {k: sum(r[5] == k for r in rows) for k in ('exact', 'differs', 'failed')}
    per_family = {f: [r for r in rows if r[0] == f] for f in FAMILIES}
    cls = [r for r in rows if r[0] == 'classification']
    slowest = sorted({(r[1].split('.')[0], r[2]): r for r in rows}.values(), key=lambda r: -r[6][0])[:8]
    lines = ['# Our FLOPs counter vs torchvision\'s published `_ops`', '',
             f'`python bench/flops_vs_torchvision.py`; torch {torch.__version__}, torchvision {torchvision.__version__}, '
             f'{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s); load average {load:.1f} at the end, this '
             'run included (above the thread count, other work was running: wall times are inflated, CPU seconds are steadier). '
             'GMACs = torchvision\'s `_ops` (multiply-adds of convolutions, linear layers, matmuls and attention, bias '
             'excluded); "exact": equal to torchvision\'s 3 decimals. Time: one `model_summary(name, size)` call, build '
             'with random weights included (best of 2 on meta, one call elsewhere); device: where it counted (meta, else CPU with a real input).', '',
             f'**{len(rows)} weights entries: {n["exact"]} exact, {n["differs"]} differing, {n["failed"]} failing.**', '',
             '| family | entries | exact | differing | failing | on meta | slowest call (wall s) | slowest call (CPU s) |', '|--|--:|--:|--:|--:|--:|--:|--:|']
    for f, rs in per_family.items():
        if rs: lines.append(f'| {f} | {len(rs)} | {sum(r[5] == "exact" for r in rs)} | {sum(r[5] == "differs" for r in rs)} | '
                            f'{sum(r[5] == "failed" for r in rs)} | {sum(r[7] == "meta" for r in rs)} | {max(r[6][0] for r in rs):.2f} | '
                            f'{max(r[6][1] for r in rs):.2f} |')
    if cls: lines += ['', f'Classification builders at their native size: slowest call {max(r[6][0] for r in cls):.2f} s wall, '
                          f'{max(r[6][1] for r in cls):.2f} s CPU; {sum(r[6][0] >= 2 for r in cls)} of {len(cls)} entries at 2 s '
                          f'or more wall, {sum(r[6][1] >= 2 for r in cls)} at 2 s or more CPU.']
    lines += ['', '## Slowest calls', '', '| model | input | wall s | CPU s | device |', '|--|--|--:|--:|--|']
    lines += [f'| {r[1].split(".")[0]} | {r[2]} | {r[6][0]:.2f} | {r[6][1]:.2f} | {r[7]} |' for r in slowest]
    differing = [r for r in rows if r[5] != 'exact']
    if differing:
        lines += ['', '## Not exact, and why', '',
                  'Detection counts are data-dependent: the heads run once per proposal or detection, and how many there are '
                  'depends on the weights and the image. torchvision counted its trained weights on a random image; we count '
                  'random weights (nothing is downloaded) on a fixed random image, so the backbone matches and the heads differ.', '']
    lines += ['', '## Every entry', '', '| family | weights | input | ours (GMACs) | `_ops` | | wall s | CPU s | device | why not meta |',
              '|--|--|--|--:|--:|--|--:|--:|--|--|']
    for f, w, size, macs, ops, status, secs, device, note in rows:
        ours = '-' if macs is None else f'{macs:.3f}'
        lines.append(f'| {f} | {w} | {size} | {ours} | {ops:.3f} | {status} | {secs[0]:.2f} | {secs[1]:.2f} | {device} | '
                     f'{note.replace("|", "/")[:90]} |')
    text = '\n'.join(lines) + '\n'
    if out:
        with open(out, 'w') as fh: fh.write(text)
    print('\n'.join(lines[:20]))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='bench/flops_vs_torchvision.md', help='Markdown file for the table ("" for none)')
    p.add_argument('--only', nargs='*', help='builder names to run (default: all)')
    p.add_argument('--reps', type=int, default=2, help='calls per model counted on meta; the best time is kept')
    main(**vars(p.parse_args()))
