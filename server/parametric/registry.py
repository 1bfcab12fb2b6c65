"""Every parametric method, by the name requests and the ledger use. A new method is one module and one line here."""

from __future__ import annotations

from server.parametric.alphaedit import AlphaEdit
from server.parametric.ft import FineTune
from server.parametric.memit import Memit
from server.parametric.method import EditMethod
from server.parametric.rome import Rome

METHODS: dict[str, EditMethod] = {m.name: m for m in (Rome(), Memit(), FineTune(), AlphaEdit())}
