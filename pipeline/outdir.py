"""The output directory's rules: what thresher may delete there, who may write there, and which
paths it must never touch.

The rules are those of Spark's output committers and datatrove's completion markers:

- **Delete only what you can prove you wrote.** A finished output lists every file it wrote in
  ``_thresher.json``; an unfinished one is recognised by ``_work/manifest.json`` and only files
  with thresher's own names (``data/part-*``, ``quarantine/pass*``, ``trace/NN-*``, ...) are
  touched. A ``_SUCCESS`` file alone proves nothing (every Spark, Hadoop and Dask output has one).
  A directory that also holds files thresher did not write is refused before anything is deleted.
- **Never an input.** An output equal to, inside, or containing an input is refused before
  anything is touched.
- **One writer at a time.** An advisory lock (``_thresher.lock``, ``flock``) held for the whole
  run; the file says who holds it. The kernel releases a ``flock`` when its holder dies, however it
  dies, so a lock file nobody holds is stale by definition and is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path

from thresher.pipeline.errors import OutputError

MANIFEST_NAME = "_thresher.json"  # a finished output's list of the files it wrote
LOCK_NAME = "_thresher.lock"
SUCCESS_NAME = "_SUCCESS"
LEDGER_NAME = "ledger.json"
WORK_NAME = "_work"

# thresher's own file names in an unfinished output (temp files of atomic writes included)
_OWN_PATTERNS = [
    re.compile(r"data/part-\d{5}-[\w.-]+(\.tmp)?"),
    re.compile(r"quarantine/pass\d+-\d{5}(\.[\w]+)?\.jsonl(\.tmp)?"),
    re.compile(r"trace/\d{2}-[\w.]+\.jsonl(\.tmp)?"),
    re.compile(r"(ledger\.json|_thresher\.json|_SUCCESS|report\.html|plan\.json|profile\.json|analysis\.json"
               r"|stats\.parquet|suggested\.yaml)(\.tmp)?"),
]


def expand_path(path: str) -> str:
    """``~`` and ``$VAR`` / ``${VAR}`` expanded, as a shell would have (a path given as
    ``--output=~/x`` or quoted reaches thresher unexpanded)."""
    return os.path.expandvars(os.path.expanduser(path))


# --------------------------------------------------------------------------- overlap with inputs
def check_not_overlapping(out: str | Path, input_roots: list[str], input_files: list[str]) -> None:
    """Refuse an output that is, is inside, or contains an input (compared as real paths).

    ``input_roots`` are the directories the recipe reads (directory inputs and the fixed part of
    globs), ``input_files`` the files it resolved to."""
    o = Path(os.path.realpath(out))
    for root in input_roots:
        r = Path(os.path.realpath(root))
        if o == r:
            raise OutputError(f"the output '{out}' is also an input; write the output somewhere else")
        if r.is_dir() and _inside(o, r):
            raise OutputError(f"the output '{out}' is inside the input directory '{root}' (a later run would read "
                              "its own output); write the output outside it")
        if _inside(r, o):
            raise OutputError(f"the output '{out}' contains the input '{root}'; write the output somewhere else")
    for f in input_files:
        if _inside(Path(os.path.realpath(f)), o):
            raise OutputError(f"the output '{out}' contains the input file '{f}'; write the output somewhere else")


def _inside(path: Path, parent: Path) -> bool:
    return path != parent and parent in path.parents


# --------------------------------------------------------------------------- ownership
def list_files(out: Path) -> list[str]:
    """Every file (and symlink) under ``out``, relative, '/'-separated; symlinked directories are
    not followed."""
    found = []
    for root, dirs, files in os.walk(out, followlinks=False):
        rel_root = os.path.relpath(root, out)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            found.append(name if rel_root == "." else f"{rel_root}/{name}".replace(os.sep, "/"))
    return sorted(found)


def owned_files(out: Path, present: list[str]) -> set[str] | None:
    """The files among ``present`` that a thresher run provably wrote, or None when ``out`` is not a
    thresher output at all."""
    work = [f for f in present if f == WORK_NAME or f.startswith(WORK_NAME + "/")]
    manifest = read_json(out / MANIFEST_NAME)
    if manifest is not None and isinstance(manifest.get("files"), list):  # a finished (or finishing) run
        listed = {str(f) for f in manifest["files"]}
        own = listed | {MANIFEST_NAME, SUCCESS_NAME, LOCK_NAME}
        if (out / WORK_NAME / "manifest.json").is_file():
            own |= set(work)
        return {f for f in present if f in own}
    run = read_json(out / WORK_NAME / "manifest.json")
    if run is not None:  # an unfinished run: its scratch, and files with its names for its own shards
        n_shards = len(run.get("shards", []))
        return {f for f in present if f in work or f == LOCK_NAME
                or (any(p.fullmatch(f) for p in _OWN_PATTERNS) and _shard_of(f) < n_shards)}
    ledger = read_json(out / LEDGER_NAME)  # a finished run of a thresher before _thresher.json
    if (out / SUCCESS_NAME).is_file() and ledger is not None and isinstance(ledger.get("run", {}).get("files"), list):
        listed = set(ledger["run"]["files"])
        return {f for f in present if f in listed or f == LOCK_NAME
                or (not f.startswith("data/") and any(p.fullmatch(f) for p in _OWN_PATTERNS))}
    return None


def _shard_of(rel: str) -> int:
    """The shard a data or quarantine file name belongs to (-1 for run-wide files)."""
    m = re.match(r"(?:data/part-|quarantine/pass\d+-)(\d{5})", rel)
    return int(m.group(1)) if m else -1


def add_owned(out: str | Path, names: list[str]) -> bool:
    """List ``names`` (relative paths, e.g. ``report.html``) among the files a finished output
    wrote (``_thresher.json``, rewritten atomically), so that a later run may delete or replace
    them. False, and nothing written, when ``out`` has no such list (an unfinished run's own file
    names are recognised without one)."""
    from thresher.pipeline.io.writers import write_json_atomic

    out = Path(out)
    manifest = read_json(out / MANIFEST_NAME)
    if manifest is None or not isinstance(manifest.get("files"), list):
        return False
    new = [n for n in names if n not in manifest["files"]]
    if new:
        manifest["files"] = [*manifest["files"], *new]
        write_json_atomic(out / MANIFEST_NAME, manifest)
    return True


def is_thresher_output(out: Path) -> bool:
    return owned_files(out, list_files(out)) is not None if out.is_dir() else False


def read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def remove_owned(out: Path, files: set[str], keep: set[str] = frozenset()) -> None:
    """Delete ``files`` (relative to ``out``) except ``keep``, then the directories they leave empty
    (never ``out`` itself, never a directory that still holds something)."""
    dirs = set()
    for f in sorted(files - set(keep)):
        p = out / f
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            continue
        parent = Path(f).parent
        while str(parent) not in (".", ""):
            dirs.add(parent)
            parent = parent.parent
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: something that is not ours is in there
            (out / d).rmdir()


def describe(files: list[str], n: int = 3) -> str:
    shown = ", ".join(files[:n])
    return shown + (f" and {len(files) - n} more" if len(files) > n else "")


# --------------------------------------------------------------------------- the lock
class OutputLock:
    """An exclusive advisory lock on an output directory, held from before the directory is
    prepared until the run ends. ``acquire`` fails fast, naming the holder."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, run_id: str = "") -> OutputLock:
        self.out.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_json(self.path) or {}
                os.close(fd)
                raise OutputError(f"output '{self.out}' is being written by another thresher run ({_holder(holder)}); "
                                  "wait for it to end, or choose another --output") from None
            except OSError as e:  # a filesystem without flock: fall back to the pid/host the file names
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                holder = read_json(self.path) or {}
                if _alive(holder):
                    os.close(fd)
                    raise OutputError(f"output '{self.out}' is being written by another thresher run "
                                      f"({_holder(holder)}); wait for it to end, or choose another --output") from None
            # the file may have been unlinked (by its releasing holder) between open and flock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "run_id": run_id}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self._fd = fd
            return self
        raise OutputError(f"could not lock output '{self.out}' (the lock file keeps changing)")

    def note_run(self, run_id: str) -> None:
        """Add the run's id to what the lock file tells a second run."""
        if self._fd is not None:
            info = (read_json(self.path) or {}) | {"run_id": run_id}
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: nobody can be in between
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(info: dict) -> str:
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"


def _alive(info: dict) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname():
        return bool(info) and info.get("host") != socket.gethostname()  # another host's: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
