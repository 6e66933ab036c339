"""Atomic file writes: every kerasformer writer goes through :func:`atomic_write`.

A write goes to a temporary file in the destination's own folder (so the final
``os.replace`` is a rename on one filesystem, atomic on POSIX and Windows), is
flushed and ``fsync``-ed, and only then renamed over the destination; the folder
is fsynced after the rename so the new name survives a power cut. If the writer
raises (disk full, ``ulimit -f``, read-only folder, a bug), the temporary file is
deleted and the destination is untouched: the old file stays byte-identical. If
the process is killed mid-write, the old file is also untouched; the temporary
file (``.NAME.kf-tmp-XXXXXXXX``, hidden, next to the destination) is the one
thing left behind, as nothing runs after SIGKILL to remove it.
"""
import contextlib
import os
import tempfile

__all__ = ["atomic_write", "atomic_write_bytes", "temp_path_for", "fsync_path",
           "fsync_directory", "TEMP_MARKER"]

#: Marks kerasformer's temporary files (``.NAME.kf-tmp-XXXXXXXX[SUFFIX]``).
TEMP_MARKER = ".kf-tmp-"


def temp_path_for(path, suffix=""):
    """A new, empty temporary file next to `path` (same folder), created with
    ``O_EXCL``; returns its path. `suffix` is appended (some writers need a given
    ending, e.g. Keras's ``.weights.h5``). The parent folder is created."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{name}{TEMP_MARKER}", suffix=suffix, dir=folder)
    os.close(fd)
    return temp


def fsync_path(path):
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(folder):
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened; renames are durable there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask():
    # os.umask can only be read by setting it; done once, at import, not per write
    # (another thread creating files in between would get the temporary value).
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _current_umask()


def _mode_for(path):
    """The permission bits the written file gets: those of the file it replaces, else
    what a plain ``open(path, "w")`` would give (``0666 & ~umask``)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _remove_quietly(path):
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def atomic_write(path, suffix=""):
    """Context manager: yields a temporary path next to `path`; write the whole file
    there. On a normal exit it is fsynced and renamed onto `path` (``os.replace``);
    on an exception it is deleted and `path` is left as it was.

    Args:
        path: str or path-like, the destination (its folder is created).
        suffix: ending of the temporary name, for writers that check the extension.

    Example::

        with atomic_write("out/model.safetensors") as temp:
            safetensors.numpy.save_file(tensors, temp)

    The written file keeps the permission bits of the file it replaces (a new one gets
    ``0666 & ~umask``, as ``open`` gives), not ``mkstemp``'s private 0600.
    """
    path = os.path.abspath(os.fspath(path))
    temp = temp_path_for(path, suffix)
    try:
        yield temp
        os.chmod(temp, _mode_for(path))
        fsync_path(temp)
        os.replace(temp, path)
    except BaseException:
        _remove_quietly(temp)
        raise
    fsync_directory(os.path.dirname(path))


def atomic_write_bytes(path, data):
    """Write `data` (bytes) to `path` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as temp:
        with open(temp, "wb") as f:
            f.write(data)
    return os.fspath(path)
