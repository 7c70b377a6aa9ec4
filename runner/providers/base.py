"""What both dialects share: the secret holder, the guarded HTTP call.

Status words, ids and request bodies are :mod:`runner.providers.messages`.
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote
from urllib.request import getproxies

import anyio
import httpx

from runner import __version__
from runner.errors import (
    PermanentError,
    TransientError,
    UnknownOutcomeError,
    UnsafeURLError,
    UsageError,
)
from runner.outputs.pinned import POLICY_EXTENSION, pinned_client
from runner.outputs.policy import URLPolicy, check_url
from runner.outputs.pools import Client, ShardedTransport
from runner.providers.classify import (
    raise_for_status,
    raise_for_transport,
    render_detail,
    shorten,
)
from runner.providers.messages import check_idempotency_key, require_str
from runner.providers.secret import Secret as Secret  # also its name here, as before

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # a submit may take a while to be accepted under load
WRITE_TIMEOUT = 60.0  # uploads of reference images
POOL_TIMEOUT = 30.0
DEFAULT_TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT, pool=POOL_TIMEOUT
)
# Every call has waited for its turn (rate, concurrency slots) before it reaches the pool, and
# how many are under way at once is about rps × the answer's latency. httpx keeps only 20
# connections alive by default, so each call beyond 20 at once would open and close one of its
# own. httpcore scans every connection of a pool for each request: they are held as several
# small pools (``ShardedTransport``), so a request costs the same at 100 as at 8.
API_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
USER_AGENT = f"runner/{__version__}"
# A provider answer is read whole into memory: past this it is refused, not read on.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
# One exchange (connect, send, the whole answer) ends within this, whatever the server does:
# per-read timeouts alone let a body trickling a byte at a time hold a run forever.
EXCHANGE_DEADLINE = 300.0

_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")


def env_value(environ: Mapping[str, str], name: str) -> str:
    """A credential variable's value; UsageError naming it when missing or unusable."""
    value = (environ.get(name) or "").strip()
    if not value:
        raise UsageError(f"missing API key: set the environment variable {name}")
    if not _HEADER_VALUE.fullmatch(value):
        raise UsageError(f"{name} holds characters that cannot go in an HTTP header")
    return value


def check_base_url(url: str, *, source: str = "base_url") -> None:
    """Refuse base URLs that are not plain http(s) origins (credentials in URLs included)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UsageError(f"{source}: invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"{source}: expected an http(s) URL, got {url!r}")
    if parsed.userinfo:
        raise UsageError(f"{source}: credentials in the URL are not allowed; use the key variable")
    if parsed.query or parsed.fragment:
        raise UsageError(f"{source}: a base URL has no query or fragment: {url!r}")


def origin(url: httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return (url.scheme, url.host.lower(), port)


class HttpProvider(abc.ABC):
    """One dialect's client: absolute URLs, auth only to the base URL's origin, error mapping.

    Subclasses set ``name`` and ``default_base_url``, read their credentials in
    ``credential_from`` and implement the protocols of :mod:`runner.providers.types` they have
    (``make_provider`` has mypy check each against :class:`~runner.providers.types.Provider`),
    mostly through :meth:`create` and :meth:`read_status`.
    """

    name: str
    default_base_url: ClassVar[str]

    def __init__(
        self,
        *,
        base_url: str,
        credential: Secret,
        client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        upload_client: httpx.AsyncClient | None = None,
        url_policy: URLPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._base = httpx.URL(self.base_url)
        self._credential = credential
        self.account = credential.fingerprint()
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client or _api_client(timeout)
        self._upload_client = upload_client
        self._owns_upload_client = False
        self._url_policy = url_policy

    @classmethod
    @abc.abstractmethod
    def credential_from(cls, environ: Mapping[str, str], api_key_env: str | None) -> Secret:
        """The ``Authorization`` header value, from the environment; UsageError when missing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, credential={self._credential!r})"

    def url(self, *segments: str) -> str:
        """An absolute URL under the base URL; each segment is percent-encoded."""
        return "/".join([self.base_url, *(quote(s, safe="") for s in segments)])

    def sends_key_to(self, url: httpx.URL) -> bool:
        """Only the base URL's own origin ever receives the key."""
        return origin(url) == origin(self._base)

    def redact(self, text: str) -> str:
        """``text`` without this provider's credential (in any spelling a URL gives it)."""
        return self._credential.redact(text)

    async def url_policy(self) -> URLPolicy:
        """The policy for URLs this provider hands out (upload URLs; video URLs are the
        download code's): private addresses only when the base URL is on one."""
        if self._url_policy is None:
            self._url_policy = await anyio.to_thread.run_sync(URLPolicy.for_base_url, self.base_url)
        return self._url_policy

    def upload_client(self) -> httpx.AsyncClient:
        """The client for URLs outside the API (presigned uploads): one that connects only
        to addresses the URL policy allows. An injected API client (tests, the in-process
        mock) is used as it is, with the policy still applied to literal addresses."""
        if self._upload_client is None:
            if self._owns_client:
                self._upload_client = pinned_client(timeout=self._timeout)
                self._owns_upload_client = True
            else:
                self._upload_client = self._client
        return self._upload_client

    async def check_outside_url(self, url: str, *, what: str) -> httpx.URL:
        """A provider-supplied URL we are to send something to, checked by the URL policy;
        PermanentError (with the reason, redacted) when it is malformed or refused."""
        try:
            return await check_url(url, await self.url_policy(), what=what)
        except UnsafeURLError as err:
            raise PermanentError(self.redact(str(err))) from None

    async def send(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        non_idempotent: bool = False,
        client: httpx.AsyncClient | None = None,
        policy: URLPolicy | None = None,
    ) -> httpx.Response:
        """One exchange, mapped to :mod:`runner.errors` on failure; returns a 2xx response.

        The answer is read whole (at most ``MAX_ANSWER_BYTES``) within ``EXCHANGE_DEADLINE``.
        ``client`` (default: the API client) and ``policy`` (a URL policy a
        :class:`~runner.outputs.pinned.PinnedTransport` applies) are for URLs outside the API.
        """
        target = httpx.URL(url)
        what = f"{method} {target.path}"
        send_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        keyed = auth and self.sends_key_to(target)
        if keyed:
            send_headers["Authorization"] = self._credential.reveal()
        http = client if client is not None else self._client
        try:
            with anyio.fail_after(EXCHANGE_DEADLINE):
                request = http.build_request(
                    method,
                    target,
                    json=json_body,
                    content=content,
                    headers=send_headers,
                    timeout=self._timeout,
                    extensions={POLICY_EXTENSION: policy} if policy is not None else None,
                )
                # follow_redirects=False: a redirect must not carry the key anywhere
                response = await _read_capped(
                    await http.send(request, stream=True, follow_redirects=False), what
                )
        except httpx.RequestError as exc:
            log.debug("%s failed: %s", what, type(exc).__name__)
            raise_for_transport(
                exc, what=what, redact=self._credential.redact, non_idempotent=non_idempotent
            )
        except TimeoutError:
            kind = UnknownOutcomeError if non_idempotent else TransientError
            raise kind(f"{what}: no complete answer within {EXCHANGE_DEADLINE:g}s") from None
        except UnsafeURLError as err:
            raise PermanentError(f"{what}: {self.redact(str(err))}") from None
        except (httpx.InvalidURL, ValueError, UnicodeError) as err:
            # httpx parses a redirect's Location even when not following it
            raise PermanentError(
                f"{what}: malformed answer ({type(err).__name__}: {shorten(self.redact(str(err)))})"
            ) from None
        log.debug("%s -> %s", what, response.status_code)
        raise_for_status(
            response, what=what, redact=self._credential.redact, credentials_apply=keyed
        )
        return response

    async def create(
        self, url: str, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST something the provider creates (and may charge for); its JSON answer.

        With ``idempotency_key`` it is checked and sent as ``Idempotency-Key``. A lost answer is
        an UnknownOutcomeError: only a retry with the same key is safe. An answer whose values
        carry our key (an id the ledger would store and print) is refused.
        """
        headers: dict[str, str] = {}
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            headers["Idempotency-Key"] = idempotency_key
        response = await self.send(
            "POST", url, json_body=body, headers=headers, non_idempotent=True
        )
        doc = self.json_object(response)
        if any(isinstance(v, str) and self._credential.leaks(v) for v in doc.values()):
            what = f"POST {response.request.url.path}"
            raise PermanentError(f"{what}: the answer carries the API key; refused")
        return doc

    async def read_status(self, url: str, *, what: str) -> tuple[dict[str, Any], str]:
        """GET a status document: the JSON object and its (non-empty) ``status`` word."""
        doc = self.json_object(await self.send("GET", url))
        return doc, require_str(doc, "status", what=what)

    def json_object(self, response: httpx.Response) -> dict[str, Any]:
        """The answer as a JSON object, or PermanentError('malformed response ...')."""
        what = f"{response.request.method} {response.request.url.path}"
        try:
            doc = response.json()
        except (ValueError, RecursionError):  # bad JSON, bad UTF-8, 5,000-digit numbers, nesting
            snippet = self._credential.redact(shorten(response.text, 80))
            raise PermanentError(f"{what}: malformed response (not JSON): {snippet!r}") from None
        if not isinstance(doc, dict):
            raise PermanentError(f"{what}: malformed response: expected a JSON object")
        return doc

    def error_text(self, value: Any) -> str | None:
        """A provider's error field as redacted text, or None."""
        text = render_detail(value)
        return self._credential.redact(text) if text else None

    async def aclose(self) -> None:
        """Close the clients this provider created."""
        if self._owns_upload_client and self._upload_client is not None:
            await self._upload_client.aclose()
        if self._owns_client:
            await self._client.aclose()


async def _read_capped(response: httpx.Response, what: str) -> httpx.Response:
    """``response`` read whole, refused past ``MAX_ANSWER_BYTES`` (decoded bytes, so a
    compressed bomb is stopped too); the body is decoded already in what is returned."""
    headers = response.headers
    length = headers.get("content-length", "")
    plain = "content-encoding" not in headers and "transfer-encoding" not in headers
    if plain and length.isdigit() and int(length) <= MAX_ANSWER_BYTES:
        # The usual answer: its size said and within the cap (the HTTP parser takes no byte
        # more), read as it is, without building another response around it.
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        if len(body) > MAX_ANSWER_BYTES:  # a transport that does not hold to the length
            raise PermanentError(f"{what}: answer larger than {MAX_ANSWER_BYTES} bytes")
        return response
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise PermanentError(f"{what}: answer larger than {MAX_ANSWER_BYTES} bytes")
            chunks.append(chunk)
    finally:
        await response.aclose()
    skip = (b"content-encoding", b"content-length", b"transfer-encoding")
    return httpx.Response(
        response.status_code,
        headers=[(k, v) for k, v in response.headers.raw if k.lower() not in skip],
        content=b"".join(chunks),
        request=response.request,
        extensions=response.extensions,
    )


def _api_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The API client: small pools (``outputs.pools``), unless the environment names a proxy
    (``HTTPS_PROXY`` and the like), which httpx honours only with its own transport."""
    if any(scheme in getproxies() for scheme in ("http", "https", "all")):
        return Client(timeout=timeout, limits=API_LIMITS)
    return Client(timeout=timeout, transport=ShardedTransport(API_LIMITS))
