"""Writing files so that a crash, a kill or a power cut never leaves a half-written one under the final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

__all__ = [
    "KILL_AT_WRITE_ENV",
    "MAX_JSON_BYTES",
    "atomic_path",
    "clear_stale",
    "commit",
    "disk_full",
    "read_json",
    "sha256",
    "temp_path",
    "writable_dir",
    "write_json",
    "write_text",
]

KILL_AT_WRITE_ENV = "ZOO_TEST_KILL_AT_WRITE"
"""For fault-injection tests: ``N`` makes the process kill itself (SIGKILL) at its Nth file write, before the rename."""
_writes = itertools.count(1)
_TEMP = re.compile(r"\.zoo-tmp-(\d+)-(.+)")
"""zoo's temporary names (``.zoo-tmp-PID-NAME``): unmistakable, so that clearing them never takes a user's file."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(folder: Path) -> list[Path]:
    """Remove temporary files that a killed zoo process left in ``folder``; those of live processes stay."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            found = _TEMP.fullmatch(entry.name)
            if found and int(found[1]) != os.getpid() and not _alive(int(found[1])):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a directory to flush it
        return
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before ``commit`` renames it into place (temporary files of dead processes
    in that folder are cleared first); the suffix stays, which some writers insist on."""
    clear_stale(path.parent)
    return path.with_name(f".zoo-tmp-{os.getpid()}-{path.name}")


def commit(tmp: Path, path: Path) -> None:
    """Flush the finished ``tmp`` to disk and rename it to ``path``, then flush the directory: after a power cut
    ``path`` holds the old or the new file, whole.  The file gets the usual permissions (0644 under the common
    umask): some writers, safetensors among them, create files readable by their owner alone."""
    _fsync(tmp)
    os.chmod(tmp, 0o666 & ~_umask())
    if os.environ.get(KILL_AT_WRITE_ENV) == str(next(_writes)):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(tmp, path)
    _fsync(path.parent, directory=True)


def disk_full(exc: BaseException, path: Path) -> ZooError | None:
    """The ZooError naming the directory when ``exc`` says the disk (or quota) is full while writing ``path``."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if full or "No space left on device" in str(exc):  # safetensors reports it as a SafetensorError
        return ZooError(
            f"no space left to write {path.name} in {path.parent}; {path.name} there is unchanged. "
            f"Free some space, or write elsewhere (--out, --runs-dir)"
        )
    return None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is committed (flushed and renamed) to ``path``.

    On failure the temporary file is removed and ``path`` keeps its previous contents.  A full disk is a
    ZooError naming the directory.
    """
    tmp = temp_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except Exception as exc:
        if full := disk_full(exc, path):
            raise full from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def writable_dir(folder: Path, fix: str) -> Path:
    """``folder``, created if need be, once a file could be made in it: checked before the work whose results go
    there, so that a read-only or unusable folder costs nothing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / "write-test")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ZooError(f"cannot write to {folder} ({exc.strerror}); {fix}") from exc
    return folder


MAX_JSON_BYTES = 1 << 20


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON in ``path``, a regular file of at most ``limit`` bytes; ZooError naming the problem otherwise.

    Opened without blocking and checked on the open file, so a FIFO, a device (a link to /dev/zero) or a huge
    file in a folder someone handed over neither hangs nor allocates.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ZooError(f"cannot read {path} ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ZooError(f"{path} is not a regular file; zoo reads only files it wrote")
        if info.st_size > limit:
            raise ZooError(f"{path} is {info.st_size:,} bytes, more than the {limit:,} zoo reads; it is not zoo's")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ZooError(f"{path} is more than the {limit:,} bytes zoo reads; it is not zoo's")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ZooError(f"{path} is not valid JSON ({' '.join(str(exc).split())[:120]})") from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


CACHE_DIR_ENV = "ZOO_CACHE_DIR"


def cache_root() -> Path:
    """Where zoo keeps what it can make again (decoded folders, downloaded weights): $ZOO_CACHE_DIR, or the user's
    cache directory."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    import platformdirs

    return platformdirs.user_cache_path("zoo")


def sha256(path: Path) -> str:
    """The file's SHA-256, hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
