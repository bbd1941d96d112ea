"""How every output folder is written (checkpoints, reports, calibrations, translations): what cannot work is refused
before the work (a folder that cannot be written, is not empty or lacks room), one writer at a time (output_lock),
and all or nothing (atomic_folder: a finished folder replaces the old one in two renames; checkpoint.py's
recover_interrupted_swap puts the old one back after a kill between them)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .errors import CheckpointError, DataError


def check_writable(folder: Path) -> None:
    """Raise CheckpointError unless files can be written in `folder` (or in its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CheckpointError(
            f"{folder}: nothing can be written there ({exc.strerror or exc}). Choose another "
            "output folder, or fix its permissions."
        ) from exc


def claim_new_folder(out: str | Path, what: str) -> Path:
    """Before the work, refuse an output folder that holds anything or where nothing can be written. An empty folder
    already there is removed now (atomic_folder puts the finished one in its place): one that cannot be replaced,
    such as a mount point, is refused here rather than after the work."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; choose a new folder for {what} or delete this one.")
    check_writable(out.parent)
    if out.exists():
        try:
            out.rmdir()
        except OSError as exc:
            raise CheckpointError(
                f"{out}: cannot be replaced by {what} ({exc.strerror or exc}: a mount point or a "
                "read-only disk?). Give a new folder inside it, or another folder."
            ) from exc
    return out


def check_free_space(out: Path, needed: int, copies: int = 1) -> None:
    """Raise CheckpointError when the disk holding `out` has less room than `copies` checkpoints of `needed` bytes
    (plus a fifth and 1 MB): a checkpoint that replaces another is written whole before the old one goes, so a run
    that saves more than once needs room for two."""
    folder = Path(out)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    wanted = copies * 1.2 * needed + 2**20
    if free < wanted:
        why = (
            f"two checkpoints of about {needed / 2**20:.0f} MB each (a new one is written whole before the one "
            "it replaces is removed)"
            if copies == 2
            else f"a checkpoint of about {needed / 2**20:.0f} MB"
        )
        raise CheckpointError(
            f"{folder}: {free / 2**20:.0f} MB free, this run needs {wanted / 2**20:.0f} MB: "
            f"{why}, with a margin. Free some space or choose another output folder."
        )


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; on success it replaces `out`, on failure it is removed,
    so a crash never leaves a half-written checkpoint where a reader would look. Temporary folders left by
    writes that were killed are removed first; those of writers still running are left alone."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.writing-*"):
        if not _writer_alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-{_HOST}-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        _readable_by_all(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_HOST = socket.gethostname().replace("/", "_")
_UNKNOWN_WRITER_AGE = 3600.0  # s: a temporary folder that names no writer is taken as stale after this


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _writer_alive(temporary: Path) -> bool:
    """Whether the process that made a `.NAME.writing-HOST-PID-XXXX` folder may still be writing it (a writer on
    another computer sharing the disk cannot be checked, so it counts as alive)."""
    match = re.search(r"\.writing-(?P<host>.+)-(?P<pid>\d+)-\w+$", temporary.name)
    if match is None:
        try:
            return time.time() - temporary.stat().st_mtime < _UNKNOWN_WRITER_AGE
        except OSError:
            return False
    return match["host"] != _HOST or _process_alive(int(match["pid"]))


def _lock_holder(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


@contextlib.contextmanager
def output_lock(out: Path, what: str, wait: float = 0.0) -> Iterator[None]:
    """One writer per output: hold `.NAME.lock` beside `out` while `what` writes it.

    A second writer is refused at once (or after waiting up to `wait` seconds), told which process holds it; a lock
    left by a process that was killed is taken over. In a distributed run only the first process takes the lock
    (the others write nothing themselves)."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield
        return
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"{out.parent}: cannot be made ({exc.strerror or exc}). Choose another output "
            "folder, or fix its permissions."
        ) from exc
    lock = out.with_name(f".{out.name}.lock")
    mine = {
        "pid": os.getpid(),
        "host": _HOST,
        "what": what,
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    _take_lock(lock, out, mine, wait)
    try:
        yield
    finally:
        if (_lock_holder(lock) or {}).get("pid") == mine["pid"]:
            lock.unlink(missing_ok=True)


def _take_lock(lock: Path, out: Path, mine: dict, wait: float) -> None:
    """Create `lock` holding `mine`, taking over one whose holder is gone; refuse (CheckpointError, naming the
    holder) when another writer still holds it after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            descriptor = None
        except OSError as exc:  # a read-only disk or folder: nothing can be written there, a lock neither
            raise CheckpointError(
                f"{out.parent}: nothing can be written there ({exc.strerror or exc}). Choose "
                "another output folder, or fix its permissions."
            ) from exc
        if descriptor is None:
            holder = _lock_holder(lock)
            if holder is None:
                try:  # being written by its new holder this instant, or left empty by a crash
                    fresh = time.time() - lock.stat().st_mtime < 2.0
                except OSError:
                    continue
                if not fresh:
                    lock.unlink(missing_ok=True)
                    continue
            elif holder.get("host") == _HOST and not _process_alive(holder["pid"]):
                lock.unlink(missing_ok=True)  # its process is gone: take it over
                continue
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise CheckpointError(
                f"{out}: {_holder_described(holder)} is writing it. Wait for it to finish or choose another "
                f"folder; if that process is gone (its computer crashed), delete {lock}."
            ) from None
        with os.fdopen(descriptor, "w") as file:
            json.dump(mine, file)
        return


def _holder_described(holder: dict | None) -> str:
    """Who holds a lock, as its refusal names it."""
    return (
        f"{holder.get('what', 'a run')} (process {holder['pid']} on {holder.get('host')}, since {holder.get('since')})"
        if holder
        else "another run"
    )


def _readable_by_all(folder: Path) -> None:
    """Temporary folders and files are private (0700/0600); a checkpoint gets the usual permissions (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
