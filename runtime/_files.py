"""Reading an export directory that may be hostile: regular files inside it only, sizes capped before reading.

    with Directory(Path("exports/shapes")) as d:
        manifest_bytes = d.read("manifest.json", limit=1 << 20)

A name is opened relative to the directory's own descriptor with O_NOFOLLOW | O_NONBLOCK, then fstat'ed:
a symlink (wherever it points), a FIFO, a device, a socket or a sub-directory is refused before a byte is
read, so nothing can make the runtime block on a pipe, read /dev/zero, or follow a link out of the export.
Names are single path components (the manifest's names are checked against spec.FILE_NAME first).
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from .errors import EdgeVAEError

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
    | getattr(os, "O_BINARY", 0)
_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")  # POSIX; elsewhere lstat + open by path
_CHUNK = 1 << 20  # bytes hashed per read


class Directory:
    """An export directory held open by descriptor, so every file is looked up in the same directory."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = None
        if not _DIR_FD:
            if not path.is_dir():
                raise EdgeVAEError(f"{path}: not an export directory (no such directory)")
            return
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NONBLOCK", 0)
                              | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise EdgeVAEError(f"{path}: not an export directory (no such directory)") from None
        except NotADirectoryError:
            raise EdgeVAEError(f"{path}: not an export directory (not a directory)") from None
        except (OSError, ValueError) as e:  # no permission, a name too long, a NUL byte ...
            raise EdgeVAEError(f"{path}: cannot open it ({_reason(e)})") from None

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _open(self, name: str) -> tuple[int, int]:
        """(descriptor, size) of the regular file `name`; EdgeVAEError for anything else."""
        where = self.path / name
        try:
            if self.fd is None:  # no dir_fd support: refuse links by lstat, then open the path
                if stat.S_ISLNK(os.lstat(where).st_mode):
                    raise EdgeVAEError(f"{where}: is a symbolic link; an export holds regular files only")
                fd = os.open(where, _FLAGS)
            else:
                fd = os.open(name, _FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            raise EdgeVAEError(f"{self.path}: {name} is missing") from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
                raise EdgeVAEError(f"{where}: is a symbolic link; an export holds regular files only") from None
            raise EdgeVAEError(f"{where}: cannot open it ({_reason(e)})") from None
        except ValueError as e:  # an embedded NUL byte
            raise EdgeVAEError(f"{where}: cannot open it ({e})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise EdgeVAEError(f"{where}: is a {_kind(info.st_mode)}, not a regular file")
        return fd, info.st_size

    def read(self, name: str, limit: int) -> bytes:
        """The whole file, refused unread if it holds more than `limit` bytes."""
        fd, size = self._open(name)
        try:
            _check_size(self.path / name, size, limit)
            parts, total = [], 0
            while True:  # a file that grows while we read is refused at limit + 1 bytes
                part = os.read(fd, min(limit + 1 - total, max(size + 1 - total, _CHUNK)))
                if not part:
                    break
                parts.append(part)
                total += len(part)
                _check_size(self.path / name, total, limit)
        except OSError as e:
            raise EdgeVAEError(f"{self.path / name}: cannot read it ({_reason(e)})") from None
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def sha256(self, name: str, limit: int) -> tuple[str, int]:
        """(sha256 hex, size) of the file, read in chunks; refused unread beyond `limit` bytes."""
        fd, size = self._open(name)
        digest, total = hashlib.sha256(), 0
        try:
            _check_size(self.path / name, size, limit)
            while part := os.read(fd, _CHUNK):
                total += len(part)
                _check_size(self.path / name, total, limit)
                digest.update(part)
        except OSError as e:
            raise EdgeVAEError(f"{self.path / name}: cannot read it ({_reason(e)})") from None
        finally:
            os.close(fd)
        return digest.hexdigest(), total


def _check_size(path: Path, size: int, limit: int) -> None:
    if size > limit:
        raise EdgeVAEError(f"{path}: {size:,} bytes or more, beyond the {limit:,}-byte limit for this file")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)
