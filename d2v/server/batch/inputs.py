"""What a batch job knows of each input's content: reading a file safely, and a fingerprint that tells
whether an input changed since it was embedded.

- Only regular files are read (a FIFO would block the job forever, `/dev/zero` would fill its memory),
  each up to a size limit (`--max-file-bytes`); anything else fails as that input's error.
- A fingerprint is `text:<hash>` for an inline document (BLAKE2b of its UTF-8), `tokens:<hash>` for a
  manifest's token ids (BLAKE2b of the ids written in decimal, space-separated), `file:<size>:<mtime
  in ns>` for a file (what `stat` says; the content is not hashed, so checking a million files costs
  a million `stat` calls, not reading them), `missing:<errno>` for a file that cannot be looked at,
  and `invalid:<hash>` for a manifest line that names no input. The job stores each input's
  fingerprint with its result and compares them on every run.
"""

import errno
import hashlib
import os
import stat
from pathlib import Path

from d2v.server.batch.settings import MAX_FILE_BYTES
from d2v.server.batch.sources import Source
from d2v.server.decode import InputError, InputTooLarge

__all__ = ["MAX_FILE_BYTES", "file_fingerprint", "input_fingerprint", "read_file"]


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def file_fingerprint(st: os.stat_result) -> str:
    """A file's fingerprint from its `stat`: size and modification time (ns)."""
    return f"file:{st.st_size}:{st.st_mtime_ns}"


def input_fingerprint(src: Source) -> str:
    """The input's fingerprint as it is now (see the module docstring)."""
    if src.text is not None:
        return "text:" + _hash(src.text)
    if src.tokens is not None:
        return "tokens:" + _hash(" ".join(map(str, src.tokens)))
    if src.path is None:
        return "invalid:" + _hash(src.error or "")
    try:
        return file_fingerprint(os.stat(src.path))
    except OSError as e:
        return f"missing:{errno.errorcode.get(e.errno or 0, e.errno)}"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def read_file(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file of at most `limit` bytes, and its `stat` (of the file read, as
    opened). Raises `InputError` (`InputTooLarge` over the limit) naming why."""
    try:  # O_NONBLOCK: opening a FIFO does not wait for a writer (and changes nothing for a file)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputError(None, f"cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(None, f"not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise InputTooLarge(None, f"file of {st.st_size} bytes exceeds the limit of {limit} bytes "
                                "(--max-file-bytes)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InputTooLarge(None, f"file grew past the limit of {limit} bytes while it was read "
                                "(--max-file-bytes)")
        return data, st
    except OSError as e:
        raise InputError(None, f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
