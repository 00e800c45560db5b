"""Atomic file writes (a crash mid-write leaves the previous file intact, never a half-written one) and the lock that
gives a run folder one writer."""

from __future__ import annotations

import datetime
import json
import os
import secrets
import socket
import sys
import tempfile
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from anila_core.failures import LockLost, disk_full

try:
    import fcntl
except ImportError:  # not on Windows: there folders are not locked
    fcntl = None

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "append_jsonl",
    "read_jsonl",
    "FolderLock",
    "FolderBusy",
    "LockLost",
    "LOCK_FILE",
    "check_regular",
    "file_kind",
    "read_json_file",
    "lock_holder",
    "busy_error",
    "locked_folder",
    "make_folder",
    "remove_made_folders",
]


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through ``write(fileobj)`` into a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # even an empty file may not fit on a full disk
        full = disk_full(err, path)
        if full is not None:
            raise full from None
        raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        full = disk_full(err, path)
        if full is not None and full is not err:
            raise full from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_kind(mode: int) -> str:
    """What a file of mode ``mode`` is, in words: ``a FIFO (named pipe)``, ``a folder``, ..."""
    import stat

    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | Path, expected: str = "a regular file") -> None:
    """``ValueError`` naming ``path`` when it exists but is not a regular file (a FIFO would block a reader forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the caller's own error says so
    import stat

    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: is {file_kind(mode)}, not a regular file; expected {expected}")


def read_json_file(path: str | Path, expected: str) -> Any:
    """The JSON in ``path``; one ``ValueError`` naming the file and ``expected`` when it is not a regular file or not
    JSON."""
    check_regular(path, expected)
    try:
        return json.loads(Path(path).read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{path}: is not text; expected {expected}") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); expected {expected}"
        ) from None
    except RecursionError:
        raise ValueError(f"{path}: nests its JSON too deeply to read; expected {expected}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON row and flush it to disk, so a crash loses at most the row being written.

    On a full disk the row may be torn; :func:`read_jsonl` drops a torn last line, and a
    resumed run rewrites the rows from its checkpoint.
    """
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        full = disk_full(err, path)
        if full is not None:
            raise full from None
        raise


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (a crash mid-append) is dropped."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn tail from an interrupted append
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# --------------------------------------------------------------------------- one writer per folder

LOCK_FILE = ".lock"


class FolderBusy(ValueError):
    """The folder is being written by another process (or another open writer in this one)."""


def _describe_holder(folder: Path, holder: dict | None) -> str:
    if not holder:
        return f"{folder} is being written by another process (it has not said which yet)"
    pid, host = holder.get("pid"), holder.get("host")
    mine = (
        " (this very process: another writer of this folder is still open; let it finish or close it)"
        if (pid == os.getpid() and host == socket.gethostname())
        else ""
    )
    since = f" since {holder['since']}" if holder.get("since") else ""
    command = f", running `{holder['command']}`" if holder.get("command") else ""
    return f"{folder} is being written by pid {pid} on host {host}{since}{command}{mine}"


def busy_error(description: str) -> FolderBusy:
    """The refusal of a second writer; ``description`` (from :func:`lock_holder`) names the folder and its writer."""
    return FolderBusy(
        f"--out: {description}; one process writes a folder at a time: wait for it to finish (or stop it), "
        "or choose another folder"
    )


def _read_holder(fd: int) -> dict | None:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None


def _command() -> str:
    """This process's command line, as the user typed it (``python -m anila_core ...`` rather than the path of
    ``__main__.py``)."""
    argv = list(sys.argv) or ["python"]
    main = Path(argv[0])
    head = f"python -m {main.parent.name}" if main.name == "__main__.py" else main.name
    return " ".join([head, *argv[1:]])[:300]


def _flock_briefly_retried(fd: int) -> None:
    """``flock(LOCK_EX | LOCK_NB)``, tried a few times over a fraction of a second.

    :func:`lock_holder` takes a shared lock for an instant to look; a writer that tries at that
    instant must not be refused for it. A real holder keeps the lock far longer.
    """
    import time

    for attempt in range(5):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == 4:
                raise
            time.sleep(0.02)


#: the locks this process holds: a forked child lets go of its copies of them (see :func:`_forget_locks_in_child`)
_HELD: "weakref.WeakSet[FolderLock]" = weakref.WeakSet()


def _forget_locks_in_child() -> None:
    """In a forked child, close the inherited descriptors of the parent's folder locks.

    A flock belongs to the open file, which a fork shares: a child that outlives its parent (a
    compile worker that torch forks, say) would keep the folder locked after the writer died.
    """
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


class FolderLock:
    """An exclusive ``flock`` on ``folder/.lock``, which holds the writer's pid, host, start time and command.

    The OS releases a flock when the process that holds it ends, however it ends, so a lock
    file left by a killed process never blocks: the next writer takes it over. A second writer
    is refused at once with :class:`FolderBusy` naming the holder. :meth:`release` removes the
    file (checking the inode, so that a writer that opened the old file retries on the new one).
    Processes forked from the writer do not hold it.

    A flock lives on the file, not on its name: a stray ``rm .lock`` (a cleanup script, a sync
    tool) or a moved folder would let a second writer lock a new file while the first goes on.
    So the lock also records the file's device and inode and a random token, and
    :meth:`verify` (which a writer calls before each write) raises :class:`LockLost` as soon as
    the file at the folder's path is no longer that one: at most one writer keeps writing.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._token = ""

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock (the folder must exist); raise :class:`FolderBusy` when another writer holds it."""
        if self._fd is not None or fcntl is None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                _flock_briefly_retried(fd)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise busy_error(_describe_holder(self.folder, holder)) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released and removed the file between our open and our lock: try the new one
        self._fd = fd
        _HELD.add(self)
        held = os.fstat(fd)
        self._identity = (held.st_dev, held.st_ino)
        self._token = secrets.token_hex(16)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": _command(),
            "token": self._token,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return self

    def verify(self) -> None:
        """Raise :class:`LockLost` unless ``folder/.lock`` is still the file this lock holds, with its token (a no-op
        when not held).

        Called before every write of a run (checkpoint, metrics row, final.json): a writer whose
        lock file was deleted or replaced, or whose folder was moved, stops before it writes
        again, whether or not another writer has started meanwhile.
        """
        if self._fd is None or fcntl is None:
            return
        problem = None
        try:
            now = os.stat(self.path)
        except OSError:
            now, problem = None, "was deleted"
        if now is not None and (now.st_dev, now.st_ino) != self._identity:
            problem = "was replaced by another file"
        if problem is None:
            try:
                with open(self.path, "rb") as f:
                    token = json.loads(f.read(4096) or b"{}").get("token")
            except (OSError, ValueError, AttributeError):
                token = None
            if token != self._token:
                problem = "was rewritten by another process"
        if problem is not None:
            raise LockLost(
                f"{self.path} {problem} while this process wrote {self.folder} (or the folder was moved): "
                "another process may be writing it now, so this one stopped before writing again; the files "
                "it wrote before are intact; check that nothing else writes the folder, then continue the run "
                "with resume=True"
            )

    def release(self) -> None:
        """Remove the lock file and let go of the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            now, held = os.stat(self.path), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):  # another writer's new file is left alone
                os.unlink(self.path)  # before unlocking: a waiter that opened this file sees it gone and retries
        except OSError:
            pass
        finally:
            os.close(fd)

    def forget(self) -> None:
        """Let go of the lock without touching the folder (after :class:`LockLost`: the file there may be another
        writer's)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # at interpreter exit os may be gone; the OS releases the lock anyway
            pass


def lock_holder(folder: str | Path) -> str | None:
    """Who writes ``folder`` now (a sentence naming pid and host), or ``None`` when nobody does; changes nothing."""
    path = Path(folder) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe_holder(Path(folder), _read_holder(fd))
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return None


def make_folder(folder: str | Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders it made, deepest first (``ValueError`` naming it
    when it cannot)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out: {folder} exists and is not a folder")
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"--out: cannot create {folder}: {err.strerror}; expected a folder path you can write to"
        ) from None
    return missing


def remove_made_folders(made: list[Path]) -> None:
    """Remove again the empty folders :func:`make_folder` made (deepest first), stopping at the first that is not
    empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            break


@contextmanager
def locked_folder(folder: str | Path, check: Callable[[], None] | None = None) -> Iterator[FolderLock]:
    """Hold ``folder``'s lock for the block, creating the folder if needed; ``check()`` runs first, under the lock.

    When the lock is held elsewhere or ``check`` refuses the folder, the folders made and the
    lock are removed again: a refused folder is left as it was.
    """
    made = make_folder(folder)
    lock = FolderLock(folder)
    try:
        try:
            lock.acquire()
        except OSError as err:
            raise ValueError(
                f"--out: cannot write in {folder}: {err.strerror}; expected a folder you can write to"
            ) from None
        if check is not None:
            check()
    except BaseException:
        lock.release()
        remove_made_folders(made)
        raise
    try:
        yield lock
    finally:
        lock.release()
