"""client/errors.py: every status code maps back to an exception, on purpose."""

from __future__ import annotations

import grpc
import pytest

import client
from client import errors


class FakeRpcError(grpc.RpcError):
    """What a sync channel raises: an RpcError that is also a grpc.Call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


ERROR_CLASSES = sorted(_all_subclasses(errors.EditcacheError), key=lambda c: c.__name__)
NON_OK_CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]


def test_every_non_ok_code_is_mapped_or_deliberately_left_to_the_base_class() -> None:
    mapped = set(errors.ERRORS_BY_CODE)
    assert not mapped & errors.UNMAPPED_CODES, "a code is both mapped and unmapped"
    assert mapped | errors.UNMAPPED_CODES == set(NON_OK_CODES)
    assert grpc.StatusCode.OK not in mapped | errors.UNMAPPED_CODES


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_has_its_own_code_and_is_in_the_table(cls: type[errors.EditcacheError]) -> None:
    assert "code" in vars(cls), f"{cls.__name__} does not set a status code"
    assert cls.code not in (grpc.StatusCode.OK, errors.EditcacheError.code)
    assert errors.ERRORS_BY_CODE[cls.code] is cls


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_is_exported(cls: type[errors.EditcacheError]) -> None:
    assert cls.__name__ in client.__all__
    assert getattr(client, cls.__name__) is cls


@pytest.mark.parametrize("code", NON_OK_CODES, ids=lambda c: c.name)
def test_map_rpc_errors_raises_the_class_for_the_code(code: grpc.StatusCode) -> None:
    rpc_error = FakeRpcError(code, f"details for {code.name}")
    with pytest.raises(errors.EditcacheError) as info, errors.map_rpc_errors():
        raise rpc_error
    exc = info.value
    assert type(exc) is errors.ERRORS_BY_CODE.get(code, errors.EditcacheError)
    assert exc.code is code
    assert exc.details == f"details for {code.name}"
    assert exc.__cause__ is rpc_error
    assert str(exc) == f"{code.name}: details for {code.name}"


def test_names_mirror_the_status_codes() -> None:
    for code, cls in errors.ERRORS_BY_CODE.items():
        assert cls.__name__ == code.name.title().replace("_", "")


def test_a_bare_rpc_error_becomes_the_base_class_with_unknown_code() -> None:
    with pytest.raises(errors.EditcacheError) as info, errors.map_rpc_errors():
        raise grpc.RpcError()
    assert type(info.value) is errors.EditcacheError
    assert info.value.code is grpc.StatusCode.UNKNOWN
    assert info.value.details == ""


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), errors.map_rpc_errors():
        raise KeyError("x")
