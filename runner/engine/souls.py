"""Soul ID identity models: trained once, then reused.

A model is identified by what trained it: the provider (dialect and base URL), the soul's
``name`` and its reference images (``training_hash``). Any manifest in the ledger whose soul has
the same identity reuses the model; changing the images or the name trains a new one.

Jobs that name a soul wait in ``SoulTrainer.model_id`` until its model is ready. Training is
crash-safe like a submit (SPEC v2 §4): the soul is committed as ``submitting`` with the
training's idempotency key before the POST, and its model id right after, so a later run polls
the same model instead of training (and paying for) a new one. A soul found ``submitting`` is
recovered: looked up by name in the account's custom references where the dialect can list
them, else re-sent with the same key (the provider replays the training it made).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping

import anyio

from runner.engine.calls import Calls
from runner.engine.polling import PollSchedule
from runner.engine.uploads import public_url
from runner.errors import DeadlineError, ExhaustedError, PermanentError
from runner.ledger import Ledger, SoulRow
from runner.manifest import Manifest
from runner.providers import Provider, reference_lister

READY = "ready"
TRAINING = "training"
FAILED = "failed"
SUBMITTING = "submitting"  # committed with its key before the POST; may have been trained


def training_hash(provider: Provider, name: str, images: list[str]) -> str:
    """Identifies a soul model by what trained it: provider and account, soul name, images
    (in order). A model belongs to the account that trained it."""
    identity = [provider.name, provider.base_url, provider.account, name, images]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def training_key(identity: str, name: str, urls: list[str], failures: int | str) -> str:
    """The idempotency key of a soul training: one per identity, request body and what failed
    before — the number of failed models of that identity, or the key of the training that
    failed last — so a deliberate retraining gets a new key, each time."""
    body = json.dumps([identity, name, urls, failures], ensure_ascii=False)
    return "soul-" + hashlib.sha256(body.encode()).hexdigest()[:32]


class SoulTrainer:
    """Trains (or finds) the soul models a run needs. Its provider calls follow the run's
    calls policy (``Calls``) and it polls training on the run's poll schedule."""

    def __init__(
        self,
        ledger: Ledger,
        provider: Provider,
        manifest: Manifest,
        calls: Calls,
        poll: PollSchedule,
        *,
        rng: random.Random | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.files = files or {}  # local image → URL, as recorded (ledger.Resolved)
        self.provider = provider
        self.manifest = manifest
        self.calls = calls
        self.poll = poll
        self.rng = rng or random.Random()
        self._locks: dict[str, anyio.Lock] = {}
        self._ready: dict[str, str] = {}
        self._failed: dict[str, PermanentError] = {}

    async def model_id(self, name: str) -> str:
        """The ready model id of soul ``name``, training it first if needed.

        Raises ``PermanentError`` when the soul cannot be trained.
        """
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            # One answer per soul per run: a failed training is not repeated for every job.
            if name in self._failed:
                raise self._failed[name]
            if name not in self._ready:
                try:
                    self._ready[name] = await self._ensure(name)
                except PermanentError as err:
                    self._failed[name] = err
                    raise
        return self._ready[name]

    async def _ensure(self, name: str) -> str:
        manifest = str(self.manifest.path)
        images = self.manifest.soul_images(name)
        wanted = training_hash(self.provider, self.manifest.souls[name].name, images)
        record = self.ledger.get_soul(name, manifest)
        if record is not None and record.status == SUBMITTING and record.images_hash == wanted:
            record = await self._recover(name, images, record)
        elif record is None or record.status == FAILED or record.images_hash != wanted:
            twin = self._twin(wanted)
            if twin is not None:
                record = self.ledger.set_soul(
                    name,
                    manifest,
                    status=twin.status,
                    model_id=twin.model_id,
                    images_hash=wanted,
                )
            else:
                failed = record is not None and record.status == FAILED
                after = record.idempotency_key if failed and record is not None else None
                record = await self._train(name, images, wanted, after=after)
        return await self._wait_ready(record)

    def _twin(self, wanted: str) -> SoulRow | None:
        """A model of the same identity that another manifest trained (or is training), ready
        ones first; never one that any manifest has seen fail."""
        souls = self.ledger.souls()
        failed = {s.model_id for s in souls if s.status == FAILED}
        alike = [
            s
            for s in souls
            if s.images_hash == wanted
            and s.model_id
            and s.model_id not in failed
            and s.status in (READY, TRAINING)
        ]
        alike.sort(key=lambda s: s.status != READY)
        return alike[0] if alike else None

    async def _recover(self, name: str, images: list[str], record: SoulRow) -> SoulRow:
        """A soul left ``submitting`` (a crash, or answers lost): the training may exist.
        Found by name among the account's references where the dialect lists them; else
        re-sent with the key it was committed with, which the provider replays."""
        soul_name = self.manifest.souls[name].name
        lister = reference_lister(self.provider)
        found = None
        if lister is not None:
            found = await self.calls(lambda: lister.find_reference(soul_name))
        if found is None:
            return await self._train(name, images, record.images_hash or "", record.idempotency_key)
        return self.ledger.set_soul(
            name,
            record.manifest,
            status=TRAINING,
            model_id=found,
            images_hash=record.images_hash,
            idempotency_key=record.idempotency_key,
        )

    async def _train(
        self,
        name: str,
        images: list[str],
        wanted: str,
        key: str | None = None,
        *,
        after: str | None = None,
    ) -> SoulRow:
        """Train soul ``name``: under ``key`` (a recovery re-sends its committed key), else
        under a key of its own — following on from ``after``, the key of this soul's training
        that failed, when there is one (a second failure then still gets a new key)."""
        urls = [await self._public_url(image) for image in images]
        soul_name = self.manifest.souls[name].name
        manifest = str(self.manifest.path)
        if key is None:
            # The key follows from the identity and the very body sent, so a training whose
            # answer was lost is asked for again under the same key: the provider answers
            # with the model it made, and trains (bills) only once. A model of this identity
            # that failed is trained anew under a new key.
            souls = self.ledger.souls()
            failed = {s.model_id for s in souls if s.images_hash == wanted and s.status == FAILED}
            key = training_key(wanted, soul_name, urls, after or len(failed))
        submitting = {"images_hash": wanted, "idempotency_key": key}
        self.ledger.set_soul(name, manifest, status=SUBMITTING, **submitting)
        # Training is paid for: once sent, its model id is committed even on Ctrl-C.
        with anyio.CancelScope(shield=True):
            try:
                model_id = await self.calls(
                    lambda: self.provider.train_soul(soul_name, urls, idempotency_key=key)
                )
            except (ExhaustedError, DeadlineError):
                raise  # the answer may be lost: stays `submitting`, recovered next time
            except PermanentError as err:  # refused: nothing was trained
                self.ledger.set_soul(name, manifest, status=FAILED, error=err.message, **submitting)
                raise
            record = self.ledger.set_soul(
                name, manifest, status=TRAINING, model_id=model_id, **submitting
            )
        return record

    async def _wait_ready(self, record: SoulRow) -> str:
        model_id = record.model_id or ""
        if record.status == READY:
            return model_id

        async def check() -> str | None:
            status = await self.calls(lambda: self.provider.soul_status(model_id))
            if status.state == "failed":
                error = status.error or "training failed"
                self.ledger.set_soul(
                    record.name,
                    record.manifest,
                    status=FAILED,
                    model_id=model_id,
                    error=error,
                    images_hash=record.images_hash,
                    idempotency_key=record.idempotency_key,
                )
                raise PermanentError(f"soul model {model_id} failed: {error}")
            if status.state != "ready":
                return None
            self.ledger.set_soul(
                record.name,
                record.manifest,
                status=READY,
                model_id=model_id,
                images_hash=record.images_hash,
                idempotency_key=record.idempotency_key,
            )
            return model_id

        return await self.poll.until(check, clock=self.calls.clock, rng=self.rng)

    async def _public_url(self, image: str) -> str:
        """URLs pass through; a local file is sent as the URL recorded for it, else uploaded
        once (remembered by content hash)."""
        return self.files.get(image) or await public_url(
            image, ledger=self.ledger, provider=self.provider, calls=self.calls, what="soul image"
        )
