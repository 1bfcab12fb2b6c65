"""Domain errors as OpenAI error objects: the one place the HTTP front end turns exceptions into responses.

The body is OpenAI's `{"error": {"message", "type", "param", "code"}}`, so the `openai` clients raise their
typed errors (BadRequestError, AuthenticationError, ...); `code` is the gRPC status name in lower case, the same
code a gRPC caller would get for the same mistake.
"""

from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server.errors import EditcacheError

log = logging.getLogger(__name__)

# gRPC status → (HTTP status, OpenAI error type). CANCELLED is nginx's 499: the caller went away first.
STATUS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "invalid_request_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "server_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "server_error"),
    grpc.StatusCode.INTERNAL: (500, "server_error"),
}


def error_body(message: str, error_type: str, code: str | None, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(error: Exception) -> JSONResponse:
    """The response for any exception a handler raises; an unexpected one is logged and its details kept back."""
    if isinstance(error, EditcacheError):
        status, error_type = STATUS.get(error.code, (500, "server_error"))
        code = error.code.name.lower()
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        return JSONResponse(error_body(str(error), error_type, code), status_code=status, headers=headers)
    log.error("unhandled error in an HTTP handler", exc_info=error)
    return JSONResponse(error_body("internal error; see the server log", "server_error", "internal"), status_code=500)


def install(app: FastAPI) -> None:
    """Every error the app can produce, its own and FastAPI's, as an OpenAI error object."""

    async def domain(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def malformed(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "malformed request"}
        # ("body", "messages", 0, "content") → "messages[0].content": the field to fix, as a caller writes it.
        parts = [p for p in first["loc"] if p not in ("body", "query", "path", "header")]
        param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_argument", param), status_code=400)

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), error_type, code), status_code=exc.status_code,
                            headers=exc.headers)

    app.add_exception_handler(EditcacheError, domain)
    app.add_exception_handler(RequestValidationError, malformed)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, domain)
