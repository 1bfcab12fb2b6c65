"""argparse `type=` validators shared by editctl's subcommands (`ask`, `list`, `chat`, ...)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def non_negative(kind: Callable[[str], N]) -> Callable[[str], N]:
    """Parses with `kind` (int or float) and refuses values below 0, in messages argparse prints as usage errors."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its messages
    return parse
