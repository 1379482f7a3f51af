"""Where a pretrained cfg's weights are found, offline: the Hugging Face cache (its own layout, revisions, file names),
a `save_for_hf` folder, the network probe, and the words of every failure. Quick; in-process."""
import pickle, socket
from types import SimpleNamespace

import huggingface_hub, pytest, torch

from fastai_resnetx.model import weights
from fastai_resnetx.model.weights import CheckpointError, HF_NAMES


def hf_cfg(hf_hub_id='org/net', hf_hub_filename=None, url=''):
    return SimpleNamespace(hf_hub_id=hf_hub_id, hf_hub_filename=hf_hub_filename, url=url, file=None,
                           architecture='net', tag='t')


def cache_file(hub, repo:str, name:str, ref:str='main') -> str:
    "A file in the Hugging Face cache layout (models--org--name/{refs/REF, snapshots/COMMIT/NAME}); its path."
    commit = {'main': '0' * 40}.get(ref, '1' * 40)
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / 'snapshots' / commit).mkdir(parents=True, exist_ok=True)
    (folder / 'refs').mkdir(exist_ok=True)
    (folder / 'refs' / ref).write_text(commit)
    path = folder / 'snapshots' / commit / name
    path.write_bytes(b'w')
    return str(path)


def test_the_hugging_face_cache_by_revision_and_file_name(tmp_path):
    hub = tmp_path / 'hub'
    assert weights._hf_file(hf_cfg(), cache_dir=hub) is None                          # nothing cached
    second = cache_file(hub, 'org/net', HF_NAMES[1])                                    # timm's second name only
    assert weights._hf_file(hf_cfg(), cache_dir=hub) == second
    first = cache_file(hub, 'org/net', HF_NAMES[0])
    assert weights._hf_file(hf_cfg(), cache_dir=hub) == first                          # timm's order: safetensors first
    assert weights._hf_file(hf_cfg(hf_hub_filename='other.pth'), cache_dir=hub) is None   # a named file: only it
    named = cache_file(hub, 'org/net', 'other.pth')
    assert weights._hf_file(hf_cfg(hf_hub_filename='other.pth'), cache_dir=hub) == named
    assert weights._hf_file(hf_cfg('org/net@v2'), cache_dir=hub) is None                # another revision: not cached
    v2 = cache_file(hub, 'org/net', HF_NAMES[0], ref='v2')
    assert weights._hf_file(hf_cfg('org/net@v2'), cache_dir=hub) == v2 != first


def test_a_download_asks_hugging_face_for_the_right_file(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', lambda *a, **k: calls.append((a, k)) or 'got')
    assert weights._hf_file(hf_cfg('org/net@v2'), download=True, cache_dir=tmp_path) == 'got'
    assert weights._hf_file(hf_cfg(hf_hub_filename='x.bin'), download=True) == 'got'
    assert calls == [(('org/net', HF_NAMES[0]), dict(revision='v2', cache_dir=tmp_path)),
                     (('org/net', 'x.bin'), dict(revision=None, cache_dir=None))]


def test_a_save_for_hf_folder(tmp_path):
    with pytest.raises(CheckpointError) as e: weights._folder_file(tmp_path)
    assert str(e.value) == f"folder {str(tmp_path)!r} holds none of the weights files {list(HF_NAMES)}"
    (tmp_path / HF_NAMES[1]).write_bytes(b'b')
    assert weights._folder_file(tmp_path) == str(tmp_path / HF_NAMES[1])
    (tmp_path / HF_NAMES[0]).write_bytes(b'a')
    assert weights._folder_file(tmp_path) == str(tmp_path / HF_NAMES[0])


def test_the_network_probe(monkeypatch):
    calls = []
    class Conn:
        def __enter__(self): return self
        def __exit__(self, *a): return False
    monkeypatch.setattr(socket, 'create_connection', lambda address, timeout=None: calls.append((address, timeout))
                        or Conn())
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
    assert weights._reachable('example.org', hf=False) is True and calls == [(('example.org', 443), 2.0)]
    assert weights._reachable('huggingface.co', hf=True, timeout=0.5) is True and calls[-1] == (('huggingface.co', 443), 0.5)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)               # Hugging Face's switch: no probe
    assert weights._reachable('huggingface.co', hf=True) is False and len(calls) == 2
    def refuse(*a, **k): raise OSError('no route')
    monkeypatch.setattr(socket, 'create_connection', refuse)
    assert weights._reachable('example.org', hf=False) is False


def test_where_a_copied_file_must_go(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path))
    assert weights._where_exactly(hf_cfg('timm/resnet18.a1_in1k@abc')) == (
        f"{str(tmp_path / 'models--timm--resnet18.a1_in1k')!r} (the folder `hf download timm/resnet18.a1_in1k` fills "
        f"on a machine with internet: snapshots/<commit>/model.safetensors and refs/main)")
    assert weights._where_exactly(hf_cfg('a/b', 'w.bin')).endswith("snapshots/<commit>/w.bin and refs/main)")
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    assert weights._where_exactly(hf_cfg(None, url='https://x.org/d/r18-abc.pth?dl=1')) == repr(
        str(tmp_path / 'th' / 'hub' / 'checkpoints' / 'r18-abc.pth'))


def test_the_words_for_a_file_that_cannot_be_read():
    err = weights._checkpoint_error('c.pth', ValueError('first line\nsecond'))
    assert str(err) == "could not read checkpoint 'c.pth': corrupted, truncated or not a checkpoint (ValueError: first line)"
    assert str(weights._checkpoint_error('c.pth', EOFError())).endswith('(EOFError: no detail)')
    code = pickle.UnpicklingError('Weights only load failed (global check).\n  Unsupported global: GLOBAL os.system was '
                                  'not allowed.\n')   # the line that names the GLOBAL, not the first with 'global'
    assert str(weights._checkpoint_error('c.pth', code)).startswith(
        "refused to load 'c.pth': it is a pickle that would import and run code (Unsupported global: GLOBAL os.system "
        "was not allowed.). Checkpoints are read with weights_only=True")
    plain = pickle.UnpicklingError('invalid load key, global.')                          # damaged, not code
    assert str(weights._checkpoint_error('c.pth', plain)).startswith("could not read checkpoint 'c.pth': corrupted")


def test_the_list_of_what_does_not_fit_by_hand():
    problems = [f'missing key k{i}' for i in range(12)] + ['shape mismatch w: (1,) vs (2,)']
    assert weights._problem_list(problems) == (
        "(12 missing keys, 1 shape mismatches); nothing was loaded:\n  " +
        '\n  '.join([f'missing key k{i}' for i in range(10)] + ['... and 2 more', 'shape mismatch w: (1,) vs (2,)']))
    assert weights._problem_list(problems[:10], per_kind=10).endswith('missing key k9')                  # 10 of 10: all
    assert weights._problem_list(['unexpected key u']) == "(1 unexpected keys); nothing was loaded:\n  unexpected key u"


def cfg_of(file=None, url='', hf_hub_id=None):
    return SimpleNamespace(file=file, url=url, hf_hub_id=hf_hub_id, hf_hub_filename=None, architecture='net', tag='t')


def test_where_checkpoint_file_finds_the_weights(tmp_path, monkeypatch):
    "The cfg's `file` (a file as given, a `save_for_hf` folder's weights file), torch hub's cache, the HF cache asked."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'default-hf'))
    folder = tmp_path / 'saved'
    folder.mkdir()
    (folder / HF_NAMES[0]).write_bytes(b'w')
    assert weights.checkpoint_file(cfg_of(file=str(folder))) == str(folder / HF_NAMES[0])
    assert weights.checkpoint_file(cfg_of(file=tmp_path / 'w.pth')) == str(tmp_path / 'w.pth')
    hub_file = tmp_path / 'th' / 'hub' / 'checkpoints' / 'r-abc.pth'
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b'w')
    assert weights.checkpoint_file(cfg_of(url='https://x.org/r-abc.pth', hf_hub_id='org/net')) == str(hub_file)
    cached = cache_file(tmp_path / 'hf', 'org/net', HF_NAMES[0])       # only in the cache the caller names
    assert weights.checkpoint_file(cfg_of(hf_hub_id='org/net'), cache_dir=tmp_path / 'hf') == cached


def test_a_download_goes_where_the_loaders_look(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    probes, got, asked = [], [], []
    monkeypatch.setattr(weights, '_reachable', lambda host, hf: probes.append((host, hf)) or True)
    def download(url, dst, hash_prefix=None, progress=True):
        got.append((url, dst, hash_prefix, progress))
        open(dst, 'wb').write(b'w')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    dst = tmp_path / 'th' / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    dst.parent.mkdir(parents=True)                                     # torch hub's folder may exist already
    url = 'https://download.pytorch.org/models/resnet18-f37072fd.pth'
    assert weights.checkpoint_file(cfg_of(url=url)) == str(dst)
    assert probes == [('download.pytorch.org', False)] and got == [(url, str(dst), 'f37072fd', False)]   # its hash
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', lambda *a, **k: asked.append((a, k)) or 'downloaded')
    assert weights.checkpoint_file(cfg_of(hf_hub_id='org/net@v2'), cache_dir=tmp_path / 'hf') == 'downloaded'
    assert probes[-1] == ('huggingface.co', True)
    assert asked == [(('org/net', HF_NAMES[0]), dict(revision='v2', cache_dir=tmp_path / 'hf'))]


def test_the_words_of_a_failed_download(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    monkeypatch.setattr(weights, '_reachable', lambda host, hf: True)
    def fail(*a, **k): raise OSError('boom')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', fail)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', fail)
    tail = ", or pass the file (weights='path/to/file.pth' or pretrained_cfg_overlay=dict(file=...))"
    with pytest.raises(CheckpointError) as e: weights.checkpoint_file(cfg_of(hf_hub_id='org/net'))
    assert str(e.value) == ("could not download the weights net.t from org/net (OSError: boom). On a machine with no "
                            "internet, copy that file to the Hugging Face cache ($HF_HOME) as org/net" + tail)
    with pytest.raises(CheckpointError) as e: weights.checkpoint_file(cfg_of(url='https://x.org/d/r.pth'))
    where = repr(str(tmp_path / 'th' / 'hub' / 'checkpoints' / 'r.pth'))
    assert str(e.value) == ("could not download the weights net.t from https://x.org/d/r.pth (OSError: boom). On a "
                            f"machine with no internet, copy that file to {where}" + tail)
