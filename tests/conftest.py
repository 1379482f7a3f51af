"The shared test kit: offline for every test, one weight randomiser, the fold plan's reference forward, digits data."
import contextlib, ipaddress, os, signal, socket, urllib.request
os.environ.setdefault('MPLBACKEND', 'Agg')   # tests draw plots without a screen

import pytest, torch
from torch import nn
from torch.overrides import TorchFunctionMode

# the suite runs as 2 pytest-xdist workers on 2 cores: one torch thread each avoids oversubscription
if os.environ.get('PYTEST_XDIST_WORKER'): torch.set_num_threads(1)

# the longest tests (timm's own suite, the notebooks, whole runs), started first: xdist then hands both workers a
# share of them early and ends with quick tests, instead of one worker waiting on a 100 s test at the end
FIRST = ('test_timm_suite.py', 'test_notebooks.py', 'test_splitter.py::test_one_small_arch_of_every_timm_family')


def pytest_collection_modifyitems(config, items):
    "Run order: the longest tests, then the other slow ones, then the quick ones (each in collection order)."
    def rank(item) -> int:
        first = [i for i, f in enumerate(FIRST) if f in item.nodeid]
        if first: return first[0]
        return len(FIRST) + (0 if item.get_closest_marker('slow') else 1)
    items.sort(key=rank)


def _local(host) -> bool:
    "Whether `host` is this machine (loopback, or none given)."
    if host in (None, '', 'localhost'): return True
    try: return ipaddress.ip_address(str(host).split('%')[0]).is_loopback
    except ValueError: return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    "Every test runs offline, as CI does: reaching past this machine raises at once, naming the address."
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
    def refuse(what): raise AssertionError(f'network access attempted: {what!r}')
    def local(sock, address) -> bool: return sock.family == socket.AF_UNIX or _local(address[0])
    monkeypatch.setattr(socket.socket, 'connect', lambda s, a: connect(s, a) if local(s, a) else refuse(a))
    monkeypatch.setattr(socket.socket, 'connect_ex', lambda s, a: connect_ex(s, a) if local(s, a) else refuse(a))
    monkeypatch.setattr(socket, 'getaddrinfo', lambda host, *a, **k: getaddrinfo(host, *a, **k) if _local(host)
                        else refuse(host))
    monkeypatch.setattr(socket, 'create_connection', lambda address, *a, **k: refuse(address))
    monkeypatch.setattr(urllib.request, 'urlopen', lambda url, *a, **k: refuse(url))


def randomise(model:nn.Module, seed:int=0) -> nn.Module:
    "Seeded weights and norm statistics off their init values (so a wrong wiring shows), in eval mode; cheap for big models."
    # slices of one random pool: weights uniform with variance 1/fan_in, norm weights in [0.5, 1], biases and means
    # near 0, variances in [0.5, 1.5]; no global random state is touched
    pool = torch.rand(1 << 20, generator=torch.Generator().manual_seed(seed))
    twice = torch.cat([pool, pool])
    def vals(n, i):   # n values starting at a place that differs from tensor to tensor
        if n > pool.numel(): return pool.repeat(n // pool.numel() + 1)[:n]
        start = (i * 7919) % pool.numel()
        return twice[start:start + n]
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            v = vals(p.numel(), i).view_as(p).to(p.dtype)
            if p.dim() > 1: p.copy_((2 * v - 1) * (3 / p[0].numel()) ** 0.5)
            else: p.copy_(0.5 + 0.5 * v if name.endswith('weight') else 0.2 * (v - 0.5))
        for i, (name, b) in enumerate(model.named_buffers()):
            if name.endswith('running_mean'): b.copy_(0.2 * (vals(b.numel(), i) - 0.5).view_as(b))
            elif name.endswith('running_var'): b.copy_((0.5 + vals(b.numel(), i)).view_as(b))
            elif name.endswith('num_batches_tracked'): b.zero_()
    return model.eval()


class skip_init(TorchFunctionMode):
    "In-place random/fill init ops do nothing: a model built inside costs its allocation only (`randomise` it after)."
    SKIP = {getattr(torch.Tensor, n) for n in ('normal_', 'uniform_', 'zero_', 'fill_', 'erfinv_', 'exponential_')}
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SKIP: return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def stop_signals_as_at_start():
    "SIGINT/SIGTERM/SIGHUP as a fresh process has them (Python's Ctrl-C handler, the defaults), unblocked; then restored."
    kept = {s: signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, set(kept))   # mutmut's workers block SIGINT
    try: yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, handler in kept.items(): signal.signal(s, handler)


def reference_forward(m, x, keep:bool=False):
    "An obviously correct ResNetX forward: every unit's output kept, skip sources from the original code's `get_pred`."
    from fastai_resnetx import get_pred
    plan = m.plan
    out = {0: m.maxpool(m.act1(m.bn1(m.conv1(x))))}
    for l, unit in enumerate(m.units, start=1):
        src = get_pred(l, plan.fold, plan.start_id, plan.end_id)
        out[l] = unit.act(unit.branch(out[l - 1]) + unit.shortcut(out[src]))   # out of place, nothing shared
    logits = m.fc(m.global_pool(out[plan.n_units]))
    return (logits, out) if keep else logits


@pytest.fixture(scope='session')
def digits16():
    "scikit-learn's digits at 16 px, 160 items, no augmentation: for tests that do not change the DataLoaders."
    from fastai_resnetx.job.data import digits_dls
    torch.manual_seed(0)
    return digits_dls(size=16, bs=32, n_items=160, augment=False)


def fill_hf_cache(hub, name:str, seed:int=0) -> dict:
    "A random checkpoint of timm's `name` where the Hugging Face cache `hub` keeps its default tag's weights."
    import timm
    from safetensors.torch import save_file
    cfg = timm.models.get_pretrained_cfg(name)
    torch.manual_seed(seed)
    sd = {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}
    commit = '0' * 40
    repo = hub / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    (repo / 'snapshots' / commit).mkdir(parents=True)
    save_file(sd, repo / 'snapshots' / commit / 'model.safetensors')
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    return sd
