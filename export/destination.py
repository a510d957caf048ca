"""Where an export is written, and what may be deleted there: only what is provably ours.

    check(out, run_dir, force)       # before the work: out is new, or (--force) exactly an earlier export
    tmp = stage(out)                 # .NAME.tmp-PID-RANDOM beside out, holding a lock naming this process
    ... write the files into tmp ...
    commit(tmp, out, force)          # checks out again, then swaps tmp in with renames

Rules:
- `--force` replaces only a directory that holds exactly an EdgeVAE export: a manifest.json that parses as
  one (edgevae.spec.check_manifest), and no entry besides it and the regular files it lists; or an empty
  directory. Never the run directory, a directory containing it, a symlink, or anything else.
- Leftover temporary directories are found by comparing names with the literal prefix `.NAME.tmp-`
  (no glob is built from the user's --out), and one is removed only if its lock says it belongs to a
  process of this host that is no longer alive and it holds nothing but regular files. An export in
  progress, in this process or another, is never touched.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
from pathlib import Path

from edgevae import spec as S
from edgevae.errors import EdgeVAEError

LOCK = ".edgevae-export.lock"  # inside a temporary directory while an export writes it: "HOST PID"
_LOCK_BYTES = 4096


class DestinationError(ValueError):
    """--out is in the way: it exists and is not something an export may replace."""


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def _entries(directory: Path) -> list[os.DirEntry]:
    with os.scandir(directory) as it:
        return list(it)


def is_export(directory: Path) -> bool:
    """True if `directory` holds exactly an EdgeVAE export (its manifest and regular files it lists) or nothing."""
    entries = _entries(directory)
    if not entries:
        return True
    by_name = {e.name: e for e in entries}
    manifest_entry = by_name.get(S.MANIFEST)
    if manifest_entry is None or not manifest_entry.is_file(follow_symlinks=False):
        return False
    try:
        fd = os.open(manifest_entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO since the listing: not an export
                return False
            manifest = S.parse_json(f.read(S.MAX_JSON_BYTES + 1), manifest_entry.path)
        S.check_manifest(manifest, manifest_entry.path)
    except (OSError, EdgeVAEError):
        return False
    listed = set(manifest["files"]) | {S.MANIFEST}
    return all(name in listed and e.is_file(follow_symlinks=False) for name, e in by_name.items())


def check(out: Path, run_dir: Path | None, force: bool) -> None:
    """`out` may be new, or with `force` an earlier export or an empty directory; DestinationError otherwise.
    run_dir: the run being exported, which --force must never delete (None for an imported model)."""
    if not os.path.lexists(out):
        return
    if not force:
        raise DestinationError(f"{out} already exists (pass --force to replace it)")
    if out.is_symlink():
        raise DestinationError(f"--out {out} is a symbolic link; --force replaces only a real directory")
    resolved = out.resolve()
    if run_dir is not None and (resolved == Path(run_dir).resolve() or resolved in Path(run_dir).resolve().parents):
        raise DestinationError(f"--out {out} is the run directory or contains it; --force would delete the run")
    if not out.is_dir() or not is_export(out):
        raise DestinationError(f"--force replaces only an earlier export or an empty directory; {out} is neither "
                               f"(it holds other files)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or a pid we cannot ask about: assume alive
    return True


def _stale(entry: os.DirEntry) -> bool:
    """A temporary directory left by a dead export process of this host, holding only regular files."""
    if not entry.is_dir(follow_symlinks=False):
        return False
    try:
        fd = os.open(os.path.join(entry.path, LOCK), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            host, pid = os.read(fd, _LOCK_BYTES).decode("utf-8").split()
        finally:
            os.close(fd)
        if host != socket.gethostname() or _alive(int(pid)):
            return False
        return all(e.is_file(follow_symlinks=False) for e in _entries(Path(entry.path)))
    except (OSError, ValueError):  # no lock (yet, or no longer), unreadable, malformed: not provably ours
        return False


def clear_stale(out: Path) -> list[str]:
    """Remove the temporary directories of exports to `out` whose process died; returns their names."""
    prefix, removed = _tmp_prefix(out), []
    parent = out.parent if str(out.parent) else Path(".")
    try:
        entries = _entries(parent)
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(prefix) and _stale(entry):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return removed


def stage(out: Path) -> Path:
    """A new temporary directory beside `out`, readable like any directory, locked by this process."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{_tmp_prefix(out)}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    (tmp / LOCK).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return tmp


def commit(tmp: Path, out: Path, run_dir: Path | None, force: bool) -> None:
    """Move the finished export `tmp` to `out`: a rename, or with --force a swap that keeps the old export
    until the new one is in place. `out` is checked again first: it may have changed while we worked."""
    check(out, run_dir, force)
    (tmp / LOCK).unlink()
    if not os.path.lexists(out):
        os.replace(tmp, out)
        return
    trash = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    os.replace(out, trash)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(trash, out)  # put the old export back
        raise
    shutil.rmtree(trash)
