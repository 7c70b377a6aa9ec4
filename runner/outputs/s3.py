"""Videos in S3-compatible object storage: ``output.dir: s3://bucket/prefix``.

A video streams from the provider straight into a multipart upload under its final key, and
the upload is completed only after the last byte has arrived and the count matched the
Content-Length; on any failure before that (cancellation included) the upload is aborted.
S3 makes an object visible only when its multipart upload completes (CompleteMultipartUpload
is atomic), so the final key never holds a partial video. We chose this over a temporary key
and a copy: the copy would write every video twice, CopyObject stops at 5 GB, and a crash
between the copy and the delete would leave a whole stray object. A crash (SIGKILL) at any
moment before completion leaves no object at all, only an incomplete multipart upload that
S3 keeps out of sight (and bills) until a bucket lifecycle rule
(AbortIncompleteMultipartUpload) removes it.

Memory stays flat whatever the video's size: at most ``PART_SIZE`` × (``PARTS_IN_FLIGHT`` + 1)
bytes per upload. Each part goes with a SigV4 signature over its own SHA-256, so S3 refuses a
part whose bytes changed on the way; the whole video's sha256 is computed from the same bytes
as they pass. A partial upload is never resumed: a retry starts from the first byte.

Credentials and endpoint come from the usual AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``);
obstore also finds instance, container and web-identity credentials by itself.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import posixpath
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import obstore
import obstore.exceptions
import obstore.store
from anyio import from_thread, to_thread

from runner.errors import DownloadError, TransientError, UnsafeURLError, UsageError
from runner.outputs import S3_SCHEME, Saved
from runner.outputs.fetch import DownloadPolicy, fetch

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config

PART_SIZE = 8 * 1024 * 1024  # bytes per part; S3 wants at least 5 MiB for all but the last
PARTS_IN_FLIGHT = 3  # parts uploading at once, per video
_STORE_ERRORS = (obstore.exceptions.BaseError, OSError)


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 API is and how to sign for it, read from the usual AWS variables."""

    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    allow_http: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> S3Settings:
        """Read ``AWS_*``; plain http only to a loopback endpoint (or with
        ``AWS_ALLOW_HTTP=true``), since requests carry signatures and videos."""
        endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
        allow_http = False
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UsageError(f"AWS_ENDPOINT_URL {endpoint!r} is not an http(s) URL")
            if parts.scheme == "http":
                opted_in = environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes")
                if not _is_loopback(parts.hostname) and not opted_in:
                    raise UsageError(
                        f"refusing plain-http S3 endpoint {endpoint}: use https, a loopback "
                        "endpoint, or set AWS_ALLOW_HTTP=true"
                    )
                allow_http = True
        return cls(
            endpoint=endpoint,
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
            access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=environ.get("AWS_SESSION_TOKEN") or None,
            allow_http=allow_http,
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=32)
def bucket_store(bucket: str, settings: S3Settings) -> obstore.store.S3Store:
    """An obstore client for one bucket (one per bucket and settings: clients are reused)."""
    config: S3Config = {}
    if settings.endpoint:
        config["endpoint"] = settings.endpoint
    if settings.region:
        config["region"] = settings.region
    if settings.access_key_id:
        config["access_key_id"] = settings.access_key_id
    if settings.secret_access_key:
        config["secret_access_key"] = settings.secret_access_key
    if settings.session_token:
        config["session_token"] = settings.session_token
    client: ClientConfig = {"allow_http": True} if settings.allow_http else {}
    return obstore.store.S3Store(bucket, config=config, client_options=client)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)`` (the key may be empty)."""
    if not uri.startswith(S3_SCHEME):
        raise UsageError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise UsageError(f"{uri!r} names no bucket")
    return bucket, key.strip("/")


def _size(store: obstore.store.S3Store, key: str, uri: str) -> int | None:
    """The object's size, or ``None`` when there is no object at ``key``."""
    try:
        return obstore.head(store, key)["size"]
    except FileNotFoundError:
        return None
    except _STORE_ERRORS as err:
        raise DownloadError(f"cannot look up {uri}: {err}") from err


def object_size(uri: str, *, environ: Mapping[str, str] | None = None) -> int | None:
    """The size of the object at ``uri``, or ``None`` when there is none."""
    bucket, key = split_uri(uri)
    store = bucket_store(bucket, S3Settings.from_environ(_environ(environ)))
    return _size(store, key, uri)


def presign(uri: str, expires_in: timedelta, *, environ: Mapping[str, str] | None = None) -> str:
    """A URL that lets whoever holds it GET the object at ``uri`` until ``expires_in`` has
    passed (at most 7 days for S3; less if the credentials themselves expire sooner)."""
    bucket, key = split_uri(uri)
    store = bucket_store(bucket, S3Settings.from_environ(_environ(environ)))
    try:
        return obstore.sign(store, "GET", key, expires_in)
    except _STORE_ERRORS as err:
        raise DownloadError(f"cannot sign a URL for {uri}: {err}") from err


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


class S3Store:
    """Videos under one ``s3://bucket/prefix``."""

    def __init__(self, uri: str, *, environ: Mapping[str, str] | None = None) -> None:
        self.bucket, self.prefix = split_uri(uri)
        self.settings = S3Settings.from_environ(_environ(environ))
        self._store = bucket_store(self.bucket, self.settings)

    @property
    def root(self) -> str:
        return self._uri(self.prefix)

    def _uri(self, key: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{key}" if key else f"{S3_SCHEME}{self.bucket}"

    def key(self, relative: str) -> str:
        """The object key of output name ``relative``; ``UnsafeURLError`` if it escapes."""
        normal = posixpath.normpath(relative)
        if relative.startswith("/") or normal in (".", "..") or normal.startswith("../"):
            raise UnsafeURLError(f"output path {relative!r} escapes {self.root}")
        return posixpath.join(self.prefix, normal) if self.prefix else normal

    def location(self, relative: str) -> str:
        return self._uri(self.key(relative))

    async def save(
        self,
        client: httpx.AsyncClient,
        url: str,
        relative: str,
        *,
        policy: DownloadPolicy,
        resume_token: str | None = None,
    ) -> Saved:
        """Stream ``url`` into a multipart upload at ``relative``'s key, completed only when
        the body matched its Content-Length (``resume_token`` is unused: no resume)."""
        key = self.key(relative)
        location = self._uri(key)
        digest = hashlib.sha256()
        size = 0
        failed: list[BaseException] = []  # what the body raised, to re-raise as it was

        async with fetch(client, url, policy=policy) as body:
            chunks = body.chunks()

            async def next_chunk() -> bytes | None:
                try:
                    return await chunks.__anext__()
                except StopAsyncIteration:
                    return None

            def parts() -> Iterator[bytes]:
                # Runs on the upload's thread; each chunk is read on the event loop.
                nonlocal size
                try:
                    while True:
                        from_thread.check_cancelled()  # Ctrl-C: raise, so the upload aborts
                        chunk = from_thread.run(next_chunk)
                        if chunk is None:
                            return
                        digest.update(chunk)
                        size += len(chunk)
                        yield chunk
                except BaseException as err:
                    failed.append(err)
                    raise

            try:
                await to_thread.run_sync(self._upload, key, parts())
            except _STORE_ERRORS as err:
                # obstore has aborted the upload. When the body was the cause, say so in its
                # own words: a short body is transient, a refused URL is not.
                if failed:
                    raise failed[0] from None
                raise TransientError(f"upload to {location} failed: {err}") from err
            finally:
                await chunks.aclose()
        try:
            stored = await to_thread.run_sync(obstore.head, self._store, key)
        except _STORE_ERRORS as err:
            raise TransientError(f"cannot check the upload to {location}: {err}") from err
        if stored["size"] != size:
            raise TransientError(f"{location} holds {stored['size']} bytes, not {size}")
        return Saved(location=location, bytes=size, sha256=digest.hexdigest())

    def _upload(self, key: str, source: Path | Iterator[bytes]) -> None:
        """A multipart upload of ``source`` to ``key``, completed at its end and aborted if
        reading it raises. Blocking, and with every Python call on this thread: obstore's
        async API calls back into Python from its own threads, which can abort the process
        at exit (Python < 3.13), so the runner uses only the blocking API, off the loop."""
        obstore.put(
            self._store,
            key,
            source,
            use_multipart=True,
            chunk_size=PART_SIZE,
            max_concurrency=PARTS_IN_FLIGHT,
        )

    def problem(self, location: str, size: int | None) -> str | None:
        if location.startswith(S3_SCHEME):
            bucket, key = split_uri(location)
            found = _size(self._bucket(bucket), key, location)
        else:  # a file recorded before output.dir moved to S3
            file = Path(location)
            found = file.stat().st_size if file.is_file() else None
        if found == size:
            return None
        return "missing" if found is None else f"{found} bytes, expected {size}"

    def placed(self, old: str, relative: str) -> bool:
        try:
            return old == self._uri(self.key(relative))
        except UnsafeURLError:
            return False  # (``relocate`` says why)

    def relocate(self, old: str, relative: str) -> str | None:
        """Copy the video at ``old`` (an object in any bucket, or a local file from before
        ``output.dir`` moved to S3) to ``relative``'s key, then delete the original."""
        key = self.key(relative)
        target = self._uri(key)
        if old == target or _size(self._store, key, target) is not None:
            return None
        try:
            if old.startswith(S3_SCHEME):
                bucket, old_key = split_uri(old)
                source = self._bucket(bucket)
                if _size(source, old_key, old) is None:
                    return None
                if source is self._store:
                    obstore.copy(self._store, old_key, key)
                else:  # another bucket: through a temporary file, a part at a time
                    self._copy_across(source, old_key, key)
                obstore.delete(source, old_key)
            else:
                file = Path(old)
                if not file.is_file():
                    return None
                self._upload(key, file)
                file.unlink()
        except _STORE_ERRORS as err:
            raise DownloadError(f"cannot move {old} to {target}: {err}") from err
        return target

    def _copy_across(self, source: obstore.store.S3Store, old_key: str, key: str) -> None:
        # A blocking put cannot pull from a blocking get (one runtime inside another), and
        # the async API is avoided (see _upload): the object goes through a temporary file.
        with tempfile.TemporaryFile() as spool:
            for chunk in obstore.get(source, old_key).stream(min_chunk_size=PART_SIZE):
                spool.write(chunk)
            spool.seek(0)
            self._upload(key, iter(functools.partial(spool.read, PART_SIZE), b""))

    def _bucket(self, bucket: str) -> obstore.store.S3Store:
        return self._store if bucket == self.bucket else bucket_store(bucket, self.settings)
