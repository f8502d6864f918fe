# Copyright (c) mmdms contributors. All rights reserved.
"""Write a directory (or a file) all at once: in a temporary sibling, renamed into place when
complete."""
import os
import os.path as osp
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator


def check_new_directory(path: str, force: bool = False) -> None:
    """Refuse to replace an existing, non-empty ``path`` unless ``force``."""
    if not force and osp.lexists(path) and (not osp.isdir(path) or os.listdir(path)):
        raise FileExistsError(f"'{path}' already exists; pass --force (force=True) to replace it")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(path: str, force: bool = False) -> Iterator[str]:
    """Yield a temporary directory next to ``path`` that becomes ``path`` when the block ends.

    On an exception the temporary directory is removed and ``path`` is left as it was, so no
    half-written result is ever visible. An existing ``path`` is replaced only with ``force``
    (or when it is an empty directory).

    Args:
        path (str): the directory to create.
        force (bool): replace an existing ``path``.
    """
    path = osp.abspath(path)
    check_new_directory(path, force)
    parent = osp.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())
        check_new_directory(path, force)
        if osp.lexists(path):
            old = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}.', suffix='.old', dir=parent)
            os.rename(path, osp.join(old, 'replaced'))
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(osp.join(old, 'replaced'), path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str, force: bool = False) -> Iterator[str]:
    """Yield a temporary file path next to ``path`` that becomes ``path`` when the block ends.

    On an exception the temporary file is removed and ``path`` is left as it was. An existing
    ``path`` is replaced only with ``force``.

    Args:
        path (str): the file to create.
        force (bool): replace an existing ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is not set.
    """
    path = osp.abspath(path)
    if osp.lexists(path) and not force:
        raise FileExistsError(f"'{path}' already exists; pass --force (force=True) to replace it")
    parent = osp.dirname(path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.lexists(tmp):
            os.remove(tmp)
        raise
