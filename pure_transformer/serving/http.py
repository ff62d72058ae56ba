"""HTTP plumbing for :mod:`pure_transformer.serving.app`: OpenAI-shaped errors, the
body-size and API-key middlewares, and uvicorn's own rejections.

The middlewares are plain ASGI (not ``BaseHTTPMiddleware``) so they run before
FastAPI parses anything and never get in the way of streaming responses or
disconnect detection.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core import PydanticSerializationError
from starlette.exceptions import HTTPException  # also covers routing's 404/405, unlike FastAPI's subclass


# ------------------------------------------------------------------ errors
class APIError(Exception):
    """A request problem that becomes an OpenAI-shaped error response."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code
        self.headers = headers


def error_response(status: int, message: str, *, param: str | None = None, type: str = "invalid_request_error",
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


_UNION_TAG = re.compile(r"(str|int|float|bool|list|dict|none)|.*[\[(].*")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line naming the first bad field, without pydantic's multi-line dump."""
    first = exc.errors()[0] if exc.errors() else {}
    # pydantic puts the union member it tried into the location ("prompt.str", "prompt.list[int].0"):
    # the client named a field, not a type, so those parts are left out.
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _UNION_TAG.fullmatch(str(p))]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}", None
    param = ".".join(loc) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid value')}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, param=exc.param, type=exc.type, code=exc.code,
                              headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, param=param)

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return error_response(400, f"request body is not valid JSON: {exc.msg}")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(exc.status_code, str(exc.detail), type=kind)

    @app.exception_handler(PydanticSerializationError)
    async def _unserialisable(_: Request, exc: PydanticSerializationError) -> JSONResponse:
        # Text the response cannot carry (the request's inputs are cleaned, so this is a safety net).
        return error_response(400, f"the response cannot be encoded as JSON: {str(exc).splitlines()[0][:200]}")

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        # A bug must cost one request, not the server; the traceback still goes to the log.
        import traceback

        traceback.print_exception(exc)
        return error_response(500, f"internal error: {type(exc).__name__}", type="server_error")


# -------------------------------------------------------------- middleware
class BodyLimitMiddleware:
    """413 for bodies over ``limit`` bytes, checked before any parsing, and 408 for a
    body that stalls for ``timeout_s`` (a slowloris client holds a slot forever otherwise).

    The body is buffered (it is small by construction) and replayed to the app,
    so chunked uploads without Content-Length are bounded too."""

    def __init__(self, app: Any, limit: int, timeout_s: float = 10.0):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_big = error_response(413, f"request body exceeds {self.limit} bytes", code="request_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await too_big(scope, receive, send)
        body, more = b"", True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                slow = error_response(408, f"request body not received within {self.timeout_s:g} s",
                                      code="request_timeout")
                return await slow(scope, receive, send)
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_big(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices, for streaming

        await self.app(scope, replay, send)


class ApiKeyMiddleware:
    """401 on ``/v1/*`` unless ``Authorization: Bearer KEY`` matches (constant-time)."""

    def __init__(self, app: Any, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error_response(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                          type="authentication_error", code="invalid_api_key")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


# ------------------------------------------------------------------ protocol
def openai_h11_protocol() -> type:
    """uvicorn's HTTP/1.1 protocol, answering the requests it rejects itself (a malformed
    request line or ``Content-Length``, an oversized head) in the OpenAI error shape too;
    every other byte is uvicorn's. Pass it as ``uvicorn.Config(http=...)``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class OpenAIErrorsH11(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": {"message": f"malformed HTTP request: {msg}", "type": "invalid_request_error",
                                         "param": None, "code": "bad_request"}}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return OpenAIErrorsH11
