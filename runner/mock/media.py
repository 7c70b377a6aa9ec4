"""The mock's videos and uploads: presigned video URLs, the bytes served, upload slots.

A completed generation's video URL carries a token that is reused until it expires
(``url_ttl``), then replaced; :meth:`VideoUploads.check_video_token` says whether a token is
still good for a generation. The bytes served for a video are derived from its id
(:mod:`runner.mock.video`), so tests can compare downloads by sha256. Upload slots are the
presigned ``PUT`` targets the platform hands out. :class:`~runner.mock.state.MockState` holds
the data (and the lock); these are its methods for it, kept apart from generations and souls.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from typing import TYPE_CHECKING, Literal

from runner.mock.options import MockOptions
from runner.mock.records import Generation, Upload
from runner.mock.video import video_for


class VideoUploads:
    """Video URLs, video bytes and upload slots: the part of :class:`MockState` that serves
    media (a base class of it; the fields are :class:`~runner.mock.state.MockState`'s)."""

    options: MockOptions
    uploads: dict[str, Upload]
    _video_tokens: dict[str, tuple[str, float | None]]
    _current_token: dict[str, str]
    _lock: threading.RLock

    if TYPE_CHECKING:

        def now(self) -> float: ...

    def video_path(self, generation: Generation) -> str:
        """``/_mock/videos/{id}.mp4?token=…``: reused until it expires, then a fresh one."""
        with self._lock:
            generation.answered_completed = True
            now = self.now()
            token = self._current_token.get(generation.id)
            if token is not None:
                expires = self._video_tokens[token][1]
                if expires is None or now < expires:
                    return f"/_mock/videos/{generation.id}.mp4?token={token}"
            token = secrets.token_hex(8)
            ttl = self.options.url_ttl
            self._video_tokens[token] = (generation.id, None if ttl is None else now + ttl)
            self._current_token[generation.id] = token
            return f"/_mock/videos/{generation.id}.mp4?token={token}"

    def check_video_token(self, generation_id: str, token: str) -> Literal["ok", "expired", "bad"]:
        """Whether a video URL's token is valid for this generation now."""
        with self._lock:
            entry = self._video_tokens.get(token)
            if entry is None or entry[0] != generation_id:
                return "bad"
            expires = entry[1]
            return "expired" if expires is not None and self.now() >= expires else "ok"

    def video_bytes(self, generation_id: str) -> bytes:
        """The exact bytes served for a generation's video."""
        return video_for(generation_id, min_size=self.options.video_size)

    def video_sha256(self, generation_id: str) -> str:
        """sha256 hex of :meth:`video_bytes`, for tests comparing downloads."""
        return hashlib.sha256(self.video_bytes(generation_id)).hexdigest()

    def new_upload(self, content_type: str, headers: dict[str, str]) -> str:
        """A presigned upload slot whose PUT must carry ``headers``; returns its token."""
        with self._lock:
            token = secrets.token_hex(12)
            self.uploads[token] = Upload(content_type, dict(headers))
            return token
