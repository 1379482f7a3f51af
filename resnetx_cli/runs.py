"""What a run folder is, and the process clock: stdlib-only rules that the `resnetx` front door (checking `--out` before
anything heavy is imported) and the job (`fastai_resnetx.job`, writing a run and skipping earlier runs when reading
data) share.

A folder is a run folder only if `resnetx train` (or `resnetx study`) marked it: the marker file `.resnetx-run.json`
says which command wrote it and lists the files it wrote. Only those files are ever replaced; anything else in the
folder is the user's and is never touched.
"""
import errno, json, mimetypes, os, re, signal, stat, tempfile, threading, time
from pathlib import Path

__all__ = ['process_seconds', 'MARKER', 'LOCK', 'OUTPUTS', 'written_files', 'is_run_folder', 'looks_like_run',
           'check_out_folder', 'check_writable', 'check_name_lengths', 'nearest_existing', 'OutputFolder',
           'STUDY_OUTPUTS', 'OUTPUTS_OF']

_T0 = time.time()
MARKER, LOCK = '.resnetx-run.json', '.resnetx-lock'
OUTPUTS = ('export.pkl', 'loss.png', 'confusion_matrix.png', 'metrics.json')
STUDY_OUTPUTS = ('results.jsonl', 'study.json', 'report.md', 'study.png')
OUTPUTS_OF = {'resnetx train': OUTPUTS, 'resnetx study': STUDY_OUTPUTS}   # what each command may write
_ALL_OUTPUTS = OUTPUTS + STUDY_OUTPUTS
_TEMP = re.compile(r'^\.(.+)\.tmp-\d+$')   # `.export.pkl.tmp-PID`: a file being written by (or left by a killed) run


def process_seconds() -> float:
    "Seconds since this command started (its first import), not since its process began (`bash -c 'a && resnetx'`)."
    # bash execs the last command into its own process, whose start time would count `a` (a pip install) as ours
    return time.time() - _T0


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


def check_name_lengths(path:Path, arg:str):
    "Every name in `path` that does not exist yet fits the file system's name limit (checked, not found out later)."
    full = path.absolute()
    p, limit = Path(full.anchor), 255
    for part in full.parts[1:]:                   # from the top: `exists()` itself fails on a name that is too long
        try: limit = os.pathconf(p, 'PC_NAME_MAX') if p.is_dir() else limit
        except (OSError, ValueError): pass
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"`{arg}` {str(path)!r}: the name {part[:20]!r}... is {len(os.fsencode(part))} bytes "
                             f"long, the file system allows {limit}")
        p = p / part


MARKER_MAX_BYTES = 64 * 1024   # a marker lists a few names: anything bigger is not one


def _odd_file(path:Path) -> str | None:
    "Why `path` is not a regular file the tool could have written (a link, a pipe, a folder), or None (absent or one)."
    try: st = os.lstat(path)
    except FileNotFoundError: return None
    except OSError as e: return f"cannot be read ({e.strerror})"
    if stat.S_ISLNK(st.st_mode): return 'is a symbolic link'
    if not stat.S_ISREG(st.st_mode):
        return 'is a folder' if stat.S_ISDIR(st.st_mode) else 'is not a regular file (a pipe, socket or device)'
    return None


def odd_marker(folder:Path) -> str | None:
    "Why the marker in `folder` cannot be read as one (a link, a pipe, a folder, too big), or None (absent or a file)."
    path = Path(folder) / MARKER
    why = _odd_file(path)
    size = path.stat().st_size if why is None and path.exists() else 0
    if why or size <= MARKER_MAX_BYTES: return why
    return f'is {size} bytes long, more than a marker ({MARKER_MAX_BYTES})'


def read_marker(folder:Path):
    "The marker of `folder` as JSON, or None where there is none or it is not a regular, small, parseable file."
    if odd_marker(folder) is not None: return None
    try:
        fd = os.open(Path(folder) / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try: text = os.read(fd, MARKER_MAX_BYTES + 1)
        finally: os.close(fd)
        return json.loads(text) if len(text) <= MARKER_MAX_BYTES else None
    except (OSError, ValueError, RecursionError): return None   # a deeply nested JSON is a RecursionError


def written_files(path:Path, command:str='resnetx train'):
    "The names `command` wrote in `path` (its marker's list), or None if `command` did not mark `path`."
    try:
        marker = read_marker(path)
        files, by = marker.get('files'), marker.get('written_by', 'resnetx train')
    except (OSError, ValueError, AttributeError): return None
    ok = by == command and isinstance(files, list) and all(isinstance(f, str) and f in OUTPUTS_OF[command]
                                                            for f in files)
    return files if ok else None


def is_run_folder(path:Path, command:str='resnetx train') -> bool:
    "Whether `path` is a run folder of `command`: it marked it when it wrote its outputs there."
    return written_files(path, command) is not None


def looks_like_run(path:Path) -> bool:
    "Never data: a marked run or study folder, or an unmarked older run's (its four outputs and nothing else of note)."
    if any(is_run_folder(path, c) for c in OUTPUTS_OF): return True
    p = Path(path)
    if not ((p / "export.pkl").is_file() and (p / "metrics.json").is_file()): return False
    try: entries = list(os.scandir(p))
    except OSError: return False
    # a run before the marker wrote only its outputs: a folder with other images, or with folders, is data
    return not any((e.is_dir() and not e.name.startswith('.')) or (_is_image(e.name) and e.name not in OUTPUTS)
                   for e in entries)


def _is_image(name:str) -> bool:
    "Whether a file name has an image extension (the rule fastai's `image_extensions` follows: the mimetypes table)."
    return (mimetypes.guess_type(name)[0] or '').startswith('image/')


def _ours(name:str) -> bool:
    "The marker, the lock, or a temporary output file: names only the tool writes."
    m = _TEMP.match(name)
    return name in (MARKER, LOCK) or bool(m and m[1] in (*_ALL_OUTPUTS, MARKER))


def _listing(names:list, n:int=4) -> str:
    return ', '.join(repr(n_) for n_ in names[:n]) + (f' and {len(names) - n} more' if len(names) > n else '')


def _busy(out:Path, fd:int) -> ValueError:
    "The refusal for a folder whose lock (open as `fd`) another run holds: its process id, only if a number."
    try: pid = os.pread(fd, 32, 0).decode(errors='replace').strip()
    except OSError: pid = ''
    pid = pid if pid.isdigit() else '?'      # only a number is printed, whatever the file holds
    return ValueError(f"`--out` {str(out)!r} is being written by another run (process {pid}): wait for it or choose "
                      f"another folder")


def _check_not_running(out:Path):
    "Refuse at once (before torch is imported) a folder another run holds locked; creates and holds nothing."
    import fcntl
    if os.environ.get('RANK', '0') != '0': return   # torchrun's other ranks: rank 0 holds the lock, they write nothing
    try: fd = os.open(out / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError: return                       # no lock file: no run (the real lock is taken before any writing)
    try: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError: raise _busy(out, fd) from None
    except OSError: pass                         # a file system without locks
    finally: os.close(fd)


def check_out_folder(out:Path, data:Path=None, command:str='resnetx train'):
    "`--out` of `command`: new, empty or its run folder, writable, names that fit, not the data folder nor above it."
    check_name_lengths(out, '--out')
    if out.exists() and not out.is_dir(): raise ValueError(f"`--out` {str(out)!r} is a file, not a folder")
    if data is not None:
        d, o = data.resolve(), out.resolve()
        if o == d or o in d.parents:
            raise ValueError(f"`--out` {str(out)!r} holds the `--data` folder: the run would replace it; "
                             f"choose another folder")
    if out.is_dir():
        try: names = sorted(os.listdir(out))
        except OSError as e: raise ValueError(f"`--out` {str(out)!r} cannot be read: {e.strerror}") from None
        for name, why in ((MARKER, odd_marker(out)), (LOCK, _odd_file(out / LOCK))):
            if why: raise ValueError(f"`--out` {str(out)!r}: {name} {why}; the tool writes it itself: move it away")
        _check_not_running(out)
        listed = written_files(out, command)
        if listed is None:
            # a marker that is not this command's readable marker is someone else's file, not ours
            foreign = [n for n in names if not _ours(n) or n == MARKER]
            if foreign:
                raise ValueError(f"`--out` {str(out)!r} holds files `{command}` did not write "
                                 f"({_listing(foreign)}): choose a new or empty folder (only a folder it marked as a "
                                 f"run folder is written into)")
        else:   # an output name the marker does not list, or not a file, is someone else's: it would be replaced
            others = [n for n in OUTPUTS_OF[command]
                      if (out / n).exists() and (n not in listed or not (out / n).is_file())]
            if others:
                raise ValueError(f"`--out` {str(out)!r}: {others[0]!r} is not a file the earlier run wrote; "
                                 f"move it away")
    check_writable(out if out.is_dir() else out.parent, '--out')


_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _SignalsWait:
    "Ctrl-C, SIGTERM and SIGHUP wait until the block is done, then arrive as they would have (their own handlers)."
    # Blocking them covers this thread only: the kernel hands a process signal to any thread that does not block it
    # (torch's), and Python then runs the handler in the main thread between two renames. So the main thread's
    # handlers only note a signal for the block's length, and it is raised again after it.
    def __enter__(self):
        self.got, self.handlers = [], {}
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(_HELD))
        if threading.current_thread() is threading.main_thread():
            for sig in _HELD: self.handlers[sig] = signal.signal(sig, lambda n, f: self.got.append(n))
        return self

    def __exit__(self, *exc):
        for sig, handler in self.handlers.items(): signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        for sig in dict.fromkeys(self.got): signal.raise_signal(sig)   # after the block: the handler the run had


class OutputFolder:
    "A run's hold on `--out`: made if missing, locked, outputs written in place (temp file, rename), cleaned up after."
    # in place, file by file: a mount point cannot be renamed (EBUSY),
    # and a user's files in the folder stay where they are
    def __init__(self, out, command:str='resnetx train'):
        self.out, self.command, self.created, self.fd = Path(out), command, [], None
        self.committed = False   # True once the new outputs are all in place
        self.finished = []       # outputs a run killed between its renames left, put in place when this one began

    def __enter__(self):
        missing = []
        p = self.out.absolute()
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try: d.mkdir()
            except FileExistsError: continue
            except OSError as e:
                self._remove_created()
                raise ValueError(f"`--out` {str(self.out)!r} cannot be created: {e.strerror}") from None
            self.created.append(d)
        try: self.fd = self._lock()
        except ValueError:
            self._remove_created()
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        self.finished = self._finish_switch()
        self.discard(stale=True)
        return self

    def finished_note(self) -> str | None:
        "One line for the user if this run first finished the switch of a run killed between its renames."
        if not self.finished: return None
        return (f"note: an earlier run into {self.out} was killed while putting its outputs in place; its remaining "
                f"outputs ({', '.join(self.finished)}) are now in place, so the folder held one run's outputs again "
                f"before this run began")

    def _finish_switch(self) -> list:
        "Finish a switch a killed run began (its marker names it): rename its remaining temporary outputs into place."
        marker = read_marker(self.out)
        switch = marker.get('switching') if isinstance(marker, dict) else None
        if not (isinstance(switch, dict) and marker.get('written_by') == self.command
                and isinstance(switch.get('pid'), int) and isinstance(switch.get('files'), list)): return []
        moved = []
        for n in switch['files']:
            temp = self.out / f'.{n}.tmp-{switch["pid"]}'
            # complete files: the marker names a switch only once every new output is written and closed
            if n in OUTPUTS_OF[self.command] and temp.exists() and _odd_file(temp) is None:
                os.replace(temp, self.out / n)
                moved.append(n)
        os.replace(self._marker({k: v for k, v in marker.items() if k != 'switching'}), self.out / MARKER)
        return moved

    def _lock(self) -> int:
        "Open and lock `LOCK` in the folder (never through a link); the locked file is the one the path names."
        import fcntl
        lock = self.out / LOCK
        for _ in range(100):
            try: fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                why = 'is a symbolic link' if e.errno == errno.ELOOP else f'cannot be written: {e.strerror}'
                raise ValueError(f"`--out` {str(self.out)!r}: {LOCK} {why}") from None
            try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                error = _busy(self.out, fd)
                os.close(fd)
                raise error from None
            except OSError: return fd                  # a file system without locks: the run goes on unlocked
            # the run before may have unlinked the file between our open and flock: then we hold an orphan; again
            try: same = os.path.samestat(os.fstat(fd), os.lstat(lock))
            except OSError: same = False
            if same: return fd
            os.close(fd)
        raise ValueError(f"`--out` {str(self.out)!r}: its lock file keeps changing; is another run starting there?")

    def __exit__(self, *exc):
        self.discard()
        if self.fd is not None:
            try: os.unlink(self.out / LOCK)
            except OSError: pass
            os.close(self.fd)
            self.fd = None
        self._remove_created()

    def _remove_created(self):
        for d in reversed(self.created):
            try: d.rmdir()                        # only if empty: a file written there is kept
            except OSError: break
        self.created = []

    def temp(self, name:str) -> Path:
        "Where output `name` is written before it is renamed into place."
        return self.out / f'.{name}.tmp-{os.getpid()}'

    def open_new(self, name:str):
        "Output `name`'s temporary file, opened for writing as a new file: a link or pipe put there is refused."
        return os.fdopen(os.open(self.temp(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), 'wb')

    def write_text(self, name:str, text:str) -> Path:
        "Write `text` to output `name`'s temporary file (through `open_new`)."
        with self.open_new(name) as f: f.write(text.encode())
        return self.temp(name)

    def discard(self, stale:bool=False):
        "Remove this run's temporary files (`stale`: also those a killed run left; the lock says none is running)."
        for n in os.listdir(self.out):
            m = _TEMP.match(n)
            if m and m[1] in (*OUTPUTS_OF[self.command], MARKER) and (stale or n.endswith(f'.tmp-{os.getpid()}')):
                try: os.unlink(self.out / n)
                except OSError: pass

    def commit(self, names, also=()):
        "Put the written temporary files in place, the marker (listing them and `also`) first; signals wait until done."
        names = list(names)
        with _SignalsWait(): self._commit(names, also)

    def _marker(self, content:dict) -> Path:
        "The marker `content` written to its temporary file."
        return self.write_text(MARKER, json.dumps(content, indent=2))

    def _commit(self, names:list, also):
        try:
            listed = sorted(set(names) | set(also) | set(written_files(self.out, self.command) or []))
            marker = {'written_by': self.command, 'files': listed,
                      'rule': f'{self.command} replaces only the files listed here; anything else in this folder is '
                              'never touched'}
            # the marker names the switch first: a run killed (SIGKILL) between the renames leaves it, and the next
            # run into the folder finishes the switch (`_finish_switch`), so the folder holds one run's outputs
            os.replace(self._marker({**marker, 'switching': {'pid': os.getpid(), 'files': names}}), self.out / MARKER)
            for n in names: os.replace(self.temp(n), self.out / n)
            os.replace(self._marker(marker), self.out / MARKER)
            self.created = []                     # the folder is a run folder now: kept
            self.committed = True
        finally:
            self.discard()
