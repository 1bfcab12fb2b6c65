"""Writes the served (edited) model as a Hugging Face directory, for use outside the server, and only inside the
configured export directory: ExportModel is a write to the server's disk on a caller's behalf, so the caller
names a directory under `export_dir` and never anything else on the host."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import FailedPrecondition, InvalidArgument

MAX_PATH_CHARS = 1024
MAX_NAME_CHARS = 255  # one path component, as most file systems allow


def export_target(root: Path, requested: str) -> Path:
    """The directory an export of `requested` goes to: relative to `root`, or absolute inside it.

    Refused (InvalidArgument): empty, NUL, too long, '..' anywhere, outside `root`, or through a symbolic link
    below `root` (a link could point anywhere after this check). Refused (FailedPrecondition): an existing
    file on the way, or a target that exists and is not an empty directory.
    """
    if not requested.strip():
        raise InvalidArgument("path is empty; give a directory name under the server's export directory")
    if "\x00" in requested:
        raise InvalidArgument("path contains a NUL character")
    if len(requested) > MAX_PATH_CHARS:
        raise InvalidArgument(f"path has {len(requested)} characters; the limit is {MAX_PATH_CHARS}")
    root = root.resolve()
    given = PurePosixPath(requested)
    if ".." in given.parts:
        raise InvalidArgument(f"path {requested[:200]!r} contains '..'; give a directory under the export directory")
    if given.is_absolute():
        if not Path(given).is_relative_to(root):
            raise InvalidArgument(
                f"path {requested[:200]!r} is outside the export directory {str(root)!r}; give a name under it"
            )
        given = PurePosixPath(Path(given).relative_to(root))
    if not given.parts or given.parts == (".",):
        raise InvalidArgument("path names the export directory itself; give a new directory under it")
    target = root
    for part in given.parts:
        if len(part) > MAX_NAME_CHARS:
            raise InvalidArgument(f"path component {part[:40]!r}… has {len(part)} characters; at most {MAX_NAME_CHARS}")
        target = target / part
        if target.is_symlink():
            raise InvalidArgument(f"path {requested[:200]!r} goes through the symbolic link {part!r}; not followed")
        if target.exists() and not target.is_dir():
            raise FailedPrecondition(f"{str(target)!r} exists and is not a directory; choose another name")
    if target.exists() and any(target.iterdir()):
        raise FailedPrecondition(f"export path {str(target)!r} exists and is not empty; choose a new directory")
    return target


def export_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """The model and its tokenizer into `path`, a directory `export_target` returned."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Checked again now that it exists: a link swapped in since export_target would be followed by the writes.
        if path.is_symlink() or os.path.realpath(path) != str(path):
            raise FailedPrecondition(f"export path {str(path)!r} changed into a symbolic link; choose another name")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    except OSError as exc:
        raise FailedPrecondition(f"cannot write the export to {str(path)!r}: {exc.strerror or exc}") from None
