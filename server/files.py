"""The data directory's files are the server user's alone: they hold every tenant's edits.

Directories the server creates are 0700 and files it writes 0600, whatever the umask.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> None:
    """Creates `path` (and its parents) and leaves it 0700, tightening an existing one (a launcher may have made
    it with the umask's mode); one the server's user does not own is left as it is, with a warning."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode == PRIVATE_DIR:
        return
    try:
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    except PermissionError:
        log.warning("data directory %s is open to other users (mode %o) and not ours to change; chmod 700 it",
                    path, mode)


def make_private(path: Path) -> None:
    """Creates `path` empty if missing; either way leaves it 0600."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)


def write_private(path: Path, data: bytes) -> None:
    """Writes `data` to a new 0600 file at `path`; an OSError (a full disk) leaves no file behind."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    os.chmod(path, PRIVATE_FILE)
