"""The roles a token may hold, ordered so that each implies the ones below it."""

from __future__ import annotations

from enum import Enum, IntEnum


class Role(IntEnum):
    """Each role implies the ones below it."""

    READ = 1  # Generate, GenerateStream, Score, AnswerMultiHop, Chat, GetEdit, ListEdits, ListBakedEdits, GetServerInfo
    WRITE = 2  # AddEdits, DeleteEdit, Correct
    ADMIN = 3  # ApplyParametric, RollbackParametric, ExportModel, with a token for every namespace (Scope.EVERY)

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"role must be one of read, write, admin; got {name!r}") from None


class Scope(Enum):
    """Which namespaces an RPC's token must grant, beside its role."""

    NAMESPACE = "namespace"  # the request's namespace (calls without one: any token)
    EVERY = "every"  # all namespaces ('*'): the call changes what every namespace sees (shared weights, exports)
    READABLE = "readable"  # the request's namespace, or with an empty one, whichever the token grants (a listing)
