"""Every parametric method, by the name requests and the ledger use. A new method is one module and one line here;
a method that attaches state beside a module (additions.py) also names how its state is built, by the same name."""

from __future__ import annotations

from server.parametric.additions import StateBuilder
from server.parametric.alphaedit import AlphaEdit
from server.parametric.calinet import CaliNet
from server.parametric.ft import FineTune
from server.parametric.grace import Codebook, Grace
from server.parametric.ke import Ke
from server.parametric.kn import Kn
from server.parametric.memit import Memit
from server.parametric.mend import Mend
from server.parametric.method import EditMethod
from server.parametric.rome import Rome
from server.parametric.tpatcher import Neurons, TPatcher
from server.parametric.wise import SideMemory, Wise

METHODS: dict[str, EditMethod] = {
    m.name: m
    for m in (Rome(), Memit(), FineTune(), AlphaEdit(), Grace(), Kn(), TPatcher(), Mend(), Ke(), CaliNet(), Wise())
}
# CaliNET's slots are T-Patcher's neurons, several per edit: one state serves both.
ADDED_STATE: dict[str, StateBuilder] = {Grace.name: Codebook.build, TPatcher.name: Neurons.build,
                                        CaliNet.name: Neurons.build, Wise.name: SideMemory.build}
