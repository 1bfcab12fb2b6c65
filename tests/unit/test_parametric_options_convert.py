"""Every option a client sets reaches the server's MethodRequest unchanged, through the protobuf message."""

from __future__ import annotations

from dataclasses import asdict, fields

from client import ParametricOptions
from client.convert import parametric_options_to_pb
from editcache.v1 import parametric_pb2 as parametric_pb
from server.parametric.method import MethodRequest
from server.servicers.convert import method_request_from_pb

SET = ParametricOptions(layer=3, layers=(1, 2), steps=7, lr=0.25, mom2_weight=1500.0, norm_constraint=0.5,
                        null_space_cutoff=0.125, deferral_radius=0.75, fire_at="last", memory_subjects=9,
                        own_subject_questions=5, own_subject_tokens=11, remove_from_gate=True)


def test_every_client_option_is_set_in_the_example() -> None:
    assert all(getattr(SET, f.name) not in (None, (), False) for f in fields(ParametricOptions))


def test_every_option_arrives_in_the_method_request() -> None:
    request = parametric_pb.ApplyParametricRequest(method=parametric_pb.PARAMETRIC_METHOD_TPATCHER,
                                                   options=parametric_options_to_pb(SET))
    received = method_request_from_pb(request)
    expected = {k: v for k, v in asdict(SET).items() if k != "remove_from_gate"}
    assert {k: getattr(received, k) for k in expected} == expected
    assert received.in_gate is False and received.method == "tpatcher"
    assert MethodRequest("tpatcher") == method_request_from_pb(parametric_pb.ApplyParametricRequest(
        method=parametric_pb.PARAMETRIC_METHOD_TPATCHER))  # nothing set: every default
