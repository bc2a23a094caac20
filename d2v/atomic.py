"""Crash-safe writes: the one way d2v commits a file or a directory.

A file is written aside under a temporary name in the same directory, flushed and fsynced, renamed
over its target, and the directory is fsynced so that the rename itself survives a power cut. A
directory is built aside the same way and swapped into place: on Linux with
`renameat2(RENAME_EXCHANGE)`, so the target never stops existing; elsewhere the old directory is
moved aside first and `recover_directory` puts it back if the process died in between.

Temporaries are named `.<name>.<host>-<pid>-<random>.d2v-tmp`. `clean_stale` removes the ones left
behind by processes of this host that are no longer running; a live process's temporaries (a
sharded job writing beside another) and other hosts' are left alone.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "TMP_SUFFIX",
    "atomic_directory",
    "atomic_file",
    "atomic_write",
    "clean_stale",
    "fsync_directory",
    "recover_directory",
    "replace_directory",
    "temporary_name",
]

TMP_SUFFIX = ".d2v-tmp"
_OLD = "old"  # the tag of a directory moved aside by the non-Linux swap


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def temporary_name(target: Path, tag: str | None = None) -> Path:
    """A hidden sibling of `target` that `clean_stale` recognizes as this process's temporary."""
    tag = tag or f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.name}.{tag}{TMP_SUFFIX}")


def fsync_directory(path: str | Path) -> None:
    """Make a rename or a new entry in `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on a clean exit it replaces `path`.

    On an exception the temporary is removed and `path` is untouched."""
    path = Path(path)
    tmp = temporary_name(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace `path` with `data` (str is written as UTF-8) so that a reader sees the old or the new
    contents, never a mix, whenever the writer is killed."""
    with atomic_file(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else set and restored."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root`, and give each file the permissions a plain `open`
    would have (0o666 less the umask): some writers (safetensors) create their files 0o600, which
    would make a checkpoint unreadable to the other users of a shared or container directory."""
    mode = 0o666 & ~_umask()
    for dirpath, _, files in os.walk(root):
        for name in files:
            file = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if os.stat(file).st_mode & 0o777 == 0o600 and mode != 0o600:
                    os.chmod(file, mode)
            with contextlib.suppress(OSError), open(file, "rb") as f:
                os.fsync(f.fileno())
        fsync_directory(dirpath)


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2). False where the OS or file system cannot."""
    global _libc
    if not hasattr(os, "fork") or os.uname().sysname != "Linux":
        return False
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def replace_directory(src: str | Path, dst: str | Path) -> None:
    """Move the finished directory `src` to `dst`, replacing whatever is there, so that `dst` is
    always either the old or the new directory (Linux), or recoverable by `recover_directory`."""
    src, dst = Path(src), Path(dst)
    if not dst.exists() and not dst.is_symlink():
        os.rename(src, dst)
    elif _exchange(src, dst):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old directory
    else:
        old = temporary_name(dst, _OLD)
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    fsync_directory(dst.parent)


def recover_directory(dst: str | Path) -> None:
    """Undo a directory swap that a kill interrupted: put the old directory back when `dst` is gone."""
    dst = Path(dst)
    old = temporary_name(dst, _OLD)
    if old.is_dir() and not dst.exists():
        os.rename(old, dst)
        fsync_directory(dst.parent)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory aside; on a clean exit it is fsynced and swapped into `path`.

    On an exception the partial directory is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(directory: str | Path) -> list[Path]:
    """Remove the temporaries under `directory` (not recursive) left by dead processes of this host,
    after putting back any directory whose swap was interrupted. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    host = _host()
    for p in directory.iterdir():
        name = p.name
        if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
            continue
        target, _, tag = name[1: -len(TMP_SUFFIX)].rpartition(".")
        if tag == _OLD:
            recover_directory(directory / target)
            if not p.exists():
                continue
        else:
            parts = tag.split("-")
            if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
                continue  # another host's, or not ours: leave it
            if int(parts[1]) == os.getpid() or _pid_alive(int(parts[1])):
                continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed
