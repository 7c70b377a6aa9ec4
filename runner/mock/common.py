"""What both dialects' routes share: auth, edge faults, error bodies, the submit and soul
creation pipelines."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.mock.records import Generation, Soul
from runner.mock.state import MockState
from runner.mock.video import BrokenResponse, ConnectionDropped

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
SERVER_ERROR_CODES = (500, 502, 503)
T = TypeVar("T")


def mock_state(request: Request) -> MockState:
    """The app's :class:`MockState`."""
    state: MockState = request.app.state.mock
    return state


def note(request: Request, **fields: Any) -> None:
    """Attach fields (generation_id, note) to this request's log entry."""
    for name, value in fields.items():
        setattr(request.state, name, value)


@dataclass(frozen=True)
class Dialect:
    """How one API spells auth and errors."""

    name: Literal["seed", "platform"]

    def error(
        self, status: int, message: Any, *, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        """An error answer in the dialect's shape (the platform's is FastAPI's ``detail``)."""
        if self.name == "platform":
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        text = message if isinstance(message, str) else json.dumps(message)
        return JSONResponse({"success": False, "error": text}, status_code=status, headers=headers)

    def account(self, request: Request) -> str | None:
        """The account a request authenticates as, or None (missing or wrong credentials)."""
        state = mock_state(request)
        key = self._presented_key(request)
        if key is None:
            return None
        accepted = (
            state.options.seed_api_keys if self.name == "seed" else state.options.platform_api_keys
        )
        if key in state.options.forbidden_keys:
            return "forbidden"
        if key not in accepted:
            return None
        return f"{self.name}:{accepted.index(key)}"

    def _presented_key(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if self.name == "seed":
            return value.strip() if scheme.lower() == "bearer" else None
        if scheme.lower() == "key":
            return value.strip()
        legacy_id = request.headers.get("hf-api-key")
        legacy_secret = request.headers.get("hf-secret")
        if legacy_id and legacy_secret:
            return f"{legacy_id}:{legacy_secret}"
        return None


SEED = Dialect("seed")
PLATFORM = Dialect("platform")


def retry_after_header(state: MockState) -> dict[str, str]:
    """The Retry-After header the options ask for (possibly none)."""
    mode = state.options.retry_after_mode
    if mode == "mixed":
        mode = state.choice(("seconds", "date", "none"))
    seconds = state.options.retry_after
    if mode == "seconds":
        return {"Retry-After": str(math.ceil(seconds))}
    if mode == "date":
        return {"Retry-After": email.utils.formatdate(time.time() + seconds, usegmt=True)}
    return {}


def guard(request: Request, dialect: Dialect) -> tuple[str, Response | None]:
    """Authenticate, then roll the edge faults (429, 5xx) before anything is looked at.

    Returns ``(account, None)`` to go on, or ``("", answer)`` to answer at once.
    """
    state = mock_state(request)
    account = dialect.account(request)
    if account is None:
        state.count("auth_failures")
        message = "Invalid credentials" if dialect.name == "platform" else "Invalid API key"
        return "", dialect.error(401, message)
    if account == "forbidden":
        state.count("auth_failures")
        return "", dialect.error(403, "Not enough credits")
    if state.roll(state.options.rate_429):
        state.count("throttled")
        note(request, note="throttled")
        return "", dialect.error(429, "Too many requests", headers=retry_after_header(state))
    if state.roll(state.options.rate_5xx):
        state.count("server_errors")
        note(request, note="server error")
        return "", dialect.error(state.choice(SERVER_ERROR_CODES), "Internal server error")
    return account, None


def find(
    request: Request,
    dialect: Dialect,
    param: str,
    missing: str,
    get: Callable[[MockState, str, str], T | None],
) -> tuple[MockState, T] | Response:
    """Authenticate, then look up what path parameter ``param`` names for this account with
    ``get(state, id, account)``: the state and the object, or the answer to send instead
    (401/403/429/5xx from the guard, 404 with ``missing``)."""
    account, refusal = guard(request, dialect)
    if refusal is not None:
        return refusal
    state = mock_state(request)
    found = get(state, request.path_params[param], account)
    if found is None:
        return dialect.error(404, missing)
    return state, found


def find_generation(
    request: Request, dialect: Dialect, param: str, missing: str
) -> tuple[MockState, Generation] | Response:
    """``find`` for a generation, noted in the request log."""
    found = find(request, dialect, param, missing, lambda st, id_, acct: st.generation(id_, acct))
    if not isinstance(found, Response):
        note(request, generation_id=found[1].id)
    return found


async def guarded_body(
    request: Request, dialect: Dialect, *, not_an_object: Callable[[], Response]
) -> tuple[str, dict[str, Any]] | Response:
    """``guard``, then read the body as a JSON object: ``(account, body)``, or the answer to
    send instead (the guard's, or ``not_an_object()`` for a body that is no JSON object)."""
    account, refusal = guard(request, dialect)
    if refusal is not None:
        return refusal
    try:
        doc = await request.json()
    except ValueError:
        doc = None
    return (account, doc) if isinstance(doc, dict) else not_an_object()


def submit(
    request: Request,
    dialect: Dialect,
    *,
    account: str,
    route: str,
    body: dict[str, Any],
    answer: Callable[[Generation], dict[str, Any]],
) -> Response:
    """Idempotency, the concurrency limit or account queue, creation, and the
    drop-after-accept fault."""
    state = mock_state(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        return dialect.error(422, "Idempotency-Key must be 1-255 visible ASCII characters")
    result = state.submit(
        account=account, dialect=dialect.name, route=route, body=body, idempotency_key=key
    )
    if result.kind == "conflict":
        note(request, note="idempotency conflict")
        return dialect.error(422, "Idempotency-Key was already used with a different body")
    if result.kind == "busy":
        limit = state.options.concurrency_limit
        note(request, note="concurrency limit")
        if dialect.name == "platform":
            return dialect.error(
                400, f"Maximum number of concurrent requests ({limit}) has been reached"
            )
        message = f"Too many concurrent generations ({limit})"
        return dialect.error(429, message, headers=retry_after_header(state))
    if result.kind == "queue_full":
        note(request, note="account queue full")
        return JSONResponse(
            {
                "code": "account_queue_full",
                "detail": f"Account queue is full ({result.active} requests queued or "
                "running); retry after the pause with the same Idempotency-Key",
            },
            status_code=429,
            headers=retry_after_header(state),
        )
    generation = result.generation
    assert generation is not None
    note(request, generation_id=generation.id, note=result.kind)
    doc = answer(generation)
    if result.kind == "created" and state.roll(state.options.drop_after_accept_rate):
        state.count("dropped_connections")
        note(request, note="dropped after accept")
        return BrokenResponse(json.dumps(doc).encode(), media_type="application/json")
    return JSONResponse(doc)


def create_soul(
    request: Request,
    dialect: Dialect,
    *,
    account: str,
    name: str,
    images: list[str],
    body: dict[str, Any],
    answer: Callable[[Soul], dict[str, Any]],
) -> Response:
    """Idempotency (as for generations), creation, and the drop-soul-answer fault."""
    state = mock_state(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        return dialect.error(422, "Idempotency-Key must be 1-255 visible ASCII characters")
    result = state.create_soul(
        account=account, name=name, images=images, body=body, idempotency_key=key
    )
    if result.kind == "conflict":
        note(request, note="idempotency conflict")
        return dialect.error(422, "Idempotency-Key was already used with a different body")
    soul = result.soul
    assert soul is not None
    note(request, note=result.kind)
    doc = answer(soul)
    droppable = result.kind == "created" or (
        result.kind == "replay" and state.options.drop_soul_replays
    )
    if droppable and state.roll(state.options.drop_soul_answer_rate):
        state.count("dropped_soul_answers")
        note(request, note="dropped after accept")
        return BrokenResponse(json.dumps(doc).encode(), media_type="application/json")
    return JSONResponse(doc)


class RequestLog:
    """ASGI middleware appending each request to ``MockState.log``: method, path, clock time,
    status, Idempotency-Key, generation id, a note, and whether credentials came along (never
    the credentials themselves)."""

    def __init__(self, app: ASGIApp, *, state: MockState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields: dict[str, Any] = scope.setdefault("state", {})
        status: int | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "time": self.state.now(),
            "idempotency_key": headers.get("idempotency-key"),
            "auth": "authorization" in headers or "hf-api-key" in headers,
        }
        try:
            await self.app(scope, receive, send_and_watch)
        except ConnectionDropped:
            fields.setdefault("note", "dropped")
            raise
        finally:
            entry["status"] = status
            entry["generation_id"] = fields.get("generation_id")
            entry["note"] = fields.get("note")
            self.state.record(entry)
