"""What a run folder is, and the process clock: stdlib-only rules that the `resnetx` front door (checking `--out` before
anything heavy is imported) and the job (`fastai_resnetx.job`, skipping earlier runs' outputs when reading data) share."""
import os, tempfile, time
from pathlib import Path

__all__ = ['process_seconds', 'is_run_folder', 'check_out_folder', 'check_writable', 'nearest_existing']

_T0 = time.time()


def process_seconds() -> float:
    "Seconds since this process started (interpreter start-up and imports included)."
    try:
        import psutil
        return time.time() - psutil.Process().create_time()
    except Exception: return time.time() - _T0


def nearest_existing(path:Path) -> Path:
    "`path` itself if it exists, else its nearest existing parent (absolute)."
    path = path.absolute()
    while not path.exists() and path != path.parent: path = path.parent
    return path


def check_writable(folder:Path, arg:str):
    "The nearest existing folder at or above `folder` takes a new file (probed, not assumed: root ignores modes)."
    base = nearest_existing(folder)
    if not base.is_dir(): raise ValueError(f"`{arg}` {str(folder)!r}: {str(base)!r} is a file, not a folder")
    try: os.rmdir(tempfile.mkdtemp(prefix='.resnetx-probe-', dir=base))
    except OSError as e: raise ValueError(f"`{arg}` {str(folder)!r} cannot be written: {e.strerror} ({base})") from None


def is_run_folder(path:Path) -> bool:
    "Whether `path` holds an earlier run's outputs (`export.pkl` and `metrics.json`)."
    return (Path(path) / "export.pkl").is_file() and (Path(path) / "metrics.json").is_file()


def check_out_folder(out:Path, data:Path=None):
    "`--out` of `train`: new, empty or an earlier run's, writable, and neither the data folder nor above it."
    if out.exists() and not out.is_dir(): raise ValueError(f"`--out` {str(out)!r} is a file, not a folder")
    if data is not None:
        d, o = data.resolve(), out.resolve()
        if o == d or o in d.parents:
            raise ValueError(f"`--out` {str(out)!r} holds the `--data` folder: the run would replace it; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not is_run_folder(out):
        raise ValueError(f"`--out` {str(out)!r} holds other files (not an earlier run's outputs): choose a new or empty folder")
    check_writable(out.parent, '--out')
