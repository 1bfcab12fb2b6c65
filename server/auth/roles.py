"""The roles a token may hold, ordered so that each implies the ones below it."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    """Each role implies the ones below it."""

    READ = 1  # Generate, GenerateStream, Score, Chat, GetEdit, ListEdits, ListBakedEdits, GetServerInfo
    WRITE = 2  # AddEdits, DeleteEdit, Correct
    ADMIN = 3  # ApplyParametric, RollbackParametric, ExportModel: they change what every namespace sees

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"role must be one of read, write, admin; got {name!r}") from None
