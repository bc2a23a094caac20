"""Temporaries that d2v versions before `d2v.atomic` left behind when they were killed, and their
cleanup. Each was a whole checkpoint, export or dataset, so a run that is killed often fills a disk.

    .<target>.<pid>.tmp         training checkpoints (`.step-00000200.123.tmp`), `latest`, tokenizers,
                                demo datasets: removed once process <pid> is gone
    .<target>.<8 characters>    `tempfile.mkdtemp` directories of checkpoints (`.best.k2j4x9_a`) and
                                exports (`.exp.q8w7e6r5`): removed when `<target>` is written again
    .<target>.old-<pid>         a checkpoint moved aside while it was replaced: put back when
                                `<target>` is missing (the old version killed between its two renames),
                                else removed once process <pid> is gone

`clean_temporaries` runs `d2v.atomic.clean_stale` (today's temporaries) and this cleanup together:
the writers call it for the directory they are about to write into.
"""

import contextlib
import fnmatch
import os
import re
import shutil
from pathlib import Path

from d2v.atomic import clean_stale, fsync_directory

__all__ = ["clean_legacy", "clean_temporaries"]

_PID_TMP = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.tmp$")
_OLD = re.compile(r"^\.(?P<target>.+)\.old-(?P<pid>\d+)$")
_MKDTEMP = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing it: it is cleaning before it writes
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def clean_legacy(directory: str | Path, targets: list[str]) -> list[Path]:
    """Remove (or put back) the legacy temporaries under `directory` (not recursive) whose target
    name matches one of `targets` (shell patterns, e.g. "step-*"). Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []

    def ours(target: str) -> bool:
        return any(fnmatch.fnmatchcase(target, t) for t in targets)

    for p in sorted(directory.iterdir()):
        name = p.name
        if not name.startswith(".") or name.endswith(".d2v-tmp"):
            continue
        if (m := _OLD.match(name)) and ours(m["target"]):
            target = directory / m["target"]
            if not target.exists() and p.is_dir():
                os.rename(p, target)
                fsync_directory(directory)
                continue
            if _alive(int(m["pid"])):
                continue
        elif (m := _PID_TMP.match(name)) and ours(m["target"]):
            if _alive(int(m["pid"])):
                continue
        elif (m := _MKDTEMP.match(name)) and ours(m["target"]) and p.is_dir():
            pass
        else:
            continue
        _remove(p)
        removed.append(p)
    return removed


def clean_temporaries(directory: str | Path, targets: list[str]) -> list[Path]:
    """Everything a killed writer may have left in `directory`: today's temporaries of dead
    processes (`d2v.atomic.clean_stale`) and the legacy ones of `targets`. Returns what was removed."""
    return clean_stale(directory) + clean_legacy(directory, targets)
