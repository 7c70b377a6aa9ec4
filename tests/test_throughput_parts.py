"""The parts that keep thousands of jobs in flight cheap: status changes committed per loop
turn (engine/writes.py), connections held as several small pools (outputs/pools.py), and
bodies written a block at a time beside the event loop (outputs/local.py)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from runner.engine.writes import GroupCommit
from runner.errors import TransientError, TransitionError, UnsafeURLError
from runner.ledger import JobStatus, open_ledger
from runner.outputs import local
from runner.outputs.fetch import DownloadPolicy
from runner.outputs.pools import Client, ShardedTransport
from tests.test_ledger import MANIFEST, make_job


def test_changes_of_one_loop_turn_commit_together_and_each_is_durable(tmp_path: Path) -> None:
    jobs = [make_job(index=i, n=i) for i in range(20)]
    with open_ledger(str(tmp_path / "ledger.db")) as led, led.executor_lock():
        led.record_plan(MANIFEST, jobs)
        writes = GroupCommit(led)
        seen: dict[str, JobStatus] = {}

        async def move(key: str) -> None:
            row = await writes.transition(key, JobStatus.SUBMITTING, detail="sending")
            # Returned only once committed: another connection sees it already.
            with open_ledger(str(tmp_path / "ledger.db"), readonly=True) as other:
                found = other.get(key)
                assert found is not None
                seen[key] = found.status
            assert row.status is JobStatus.SUBMITTING

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for job in jobs:
                    tg.start_soon(move, job.key)

        anyio.run(main)
        assert seen == {job.key: JobStatus.SUBMITTING for job in jobs}
        assert writes.changes == 20
        assert writes.commits < 5  # one transaction for the turn, not one per change
        assert [e.to_status for e in led.events(jobs[0].key)][-1] is JobStatus.SUBMITTING


def test_a_refused_change_fails_alone_in_its_batch(tmp_path: Path) -> None:
    jobs = [make_job(index=i, n=i) for i in range(3)]
    with open_ledger(str(tmp_path / "ledger.db")) as led, led.executor_lock():
        led.record_plan(MANIFEST, jobs)
        writes = GroupCommit(led)
        results: dict[str, object] = {}

        async def move(key: str, to: JobStatus) -> None:
            try:
                results[key] = (await writes.transition(key, to)).status
            except TransitionError as err:
                results[key] = err

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(move, jobs[0].key, JobStatus.SUBMITTING)
                tg.start_soon(move, jobs[1].key, JobStatus.DOWNLOADED)  # pending → downloaded
                tg.start_soon(move, jobs[2].key, JobStatus.SUBMITTING)

        anyio.run(main)
        assert results[jobs[0].key] is JobStatus.SUBMITTING
        assert isinstance(results[jobs[1].key], TransitionError)
        assert results[jobs[2].key] is JobStatus.SUBMITTING
        statuses = [led.get(j.key).status for j in jobs]  # type: ignore[union-attr]
        assert statuses == [JobStatus.SUBMITTING, JobStatus.PENDING, JobStatus.SUBMITTING]


class _Streamed(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"x" * 10


def test_sharded_transport_spreads_requests_and_counts_them_back() -> None:
    served: list[int] = []

    def shard(index: int) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            served.append(index)
            return httpx.Response(200, stream=_Streamed())  # not read ahead, as over a socket

        return httpx.MockTransport(answer)

    made = iter(range(100))
    limits = httpx.Limits(max_connections=24, max_keepalive_connections=24)
    transport = ShardedTransport(limits, lambda _one: shard(next(made)), per_shard=8)

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            streams = [
                await client.send(client.build_request("GET", "http://x/"), stream=True)
                for _ in range(6)
            ]
            assert sorted(served) == [0, 0, 1, 1, 2, 2]  # the least busy pool each time
            for response in streams:
                assert await response.aread() == b"x" * 10
                await response.aclose()
            served.clear()
            for _ in range(3):
                await client.get("http://x/")
            assert served == [0, 0, 0]  # every count given back: the first pool again

    anyio.run(main)


def _counting_shards(served: list[int]) -> ShardedTransport:
    """Two pools of two connections, each answering with a body read only when asked."""

    def shard(index: int) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            served.append(index)
            return httpx.Response(200, stream=_Streamed())

        return httpx.MockTransport(answer)

    made = iter(range(100))
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    return ShardedTransport(limits, lambda _one: shard(next(made)), per_shard=2)


async def hold_every_connection(client: httpx.AsyncClient) -> list[httpx.Response]:
    """Four requests under way, their bodies unread: every connection of both pools busy."""
    return [
        await client.send(client.build_request("GET", "http://x/"), stream=True) for _ in range(4)
    ]


async def in_turn(
    client: httpx.AsyncClient, transport: ShardedTransport, order: list[str], name: str
) -> None:
    """One more request: ``name`` put in ``order`` once it is under way (never past a pool's
    connections), then its body read."""
    async with client.stream("GET", "http://x/") as response:
        order.append(name)
        assert max(transport._busy) <= 2  # never past a pool's connections
        await response.aread()


def test_requests_past_every_pools_room_wait_in_order_outside_the_pools() -> None:
    served: list[int] = []
    transport = _counting_shards(served)
    order: list[str] = []

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            held = await hold_every_connection(client)
            assert sorted(served) == [0, 0, 1, 1]  # every connection of both pools in use

            late = functools.partial(in_turn, client, transport, order)

            async with anyio.create_task_group() as tg:
                tg.start_soon(late, "first")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(late, "second")
                await anyio.wait_all_tasks_blocked()
                assert len(served) == 4 and order == []  # both wait, neither in a pool
                await held[1].aclose()  # a connection of pool 1 is free: one after the other
            assert order == ["first", "second"] and served[4:] == [1, 1]
            for response in held[:1] + held[2:]:
                await response.aclose()
            served.clear()
            await client.get("http://x/")
            assert served == [0]  # every count given back

    anyio.run(main)


def test_a_freed_room_goes_to_the_waiter_not_to_a_request_arriving_meanwhile() -> None:
    """The room a finished request frees is counted for the first waiter as it is woken: a
    request sent before the waiter has run waits its turn, and no pool gets more requests
    than it has connections."""
    served: list[int] = []
    transport = _counting_shards(served)
    order: list[str] = []

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            held = await hold_every_connection(client)

            late = functools.partial(in_turn, client, transport, order)

            async with anyio.create_task_group() as tg:
                tg.start_soon(late, "waiter")
                await anyio.wait_all_tasks_blocked()
                await held[0].aclose()  # frees a room and wakes the waiter, which has not run
                await late("newcomer")  # sent at once, before the waiter runs
            assert order == ["waiter", "newcomer"]
            for response in held[1:]:
                await response.aclose()
            assert transport._busy == [0, 0]

    anyio.run(main)


def test_a_cancelled_wait_leaves_the_queue_and_a_long_one_is_a_pool_timeout() -> None:
    served: list[int] = []
    transport = _counting_shards(served)

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            held = await hold_every_connection(client)
            with pytest.raises(httpx.PoolTimeout):
                await client.get("http://x/", timeout=httpx.Timeout(5.0, pool=0.01))
            got: list[str] = []

            async def wait(name: str, scope: anyio.CancelScope) -> None:
                with scope:
                    await client.get("http://x/")
                    got.append(name)

            doomed = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, "cancelled", doomed)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(wait, "next", anyio.CancelScope())
                await anyio.wait_all_tasks_blocked()
                doomed.cancel()  # leaves the queue: the room freed next goes to the other
                await anyio.wait_all_tasks_blocked()
                await held[0].aclose()
            assert got == ["next"]
            for response in held[1:]:
                await response.aclose()
            served.clear()
            await client.get("http://x/")
            assert served == [0]

    anyio.run(main)


def test_the_client_keeps_and_sends_cookies_and_skips_answers_without_one() -> None:
    sent: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        if request.url.path == "/login":
            return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"})
        return httpx.Response(200)

    async def main() -> None:
        async with Client(transport=httpx.MockTransport(answer)) as client:
            await client.get("http://x/")
            assert not client.cookies
            await client.get("http://x/login")
            await client.get("http://x/status")
            assert client.cookies.get("session") == "abc"
            client.cookies = {"other": "1"}
            await client.get("http://x/")

    anyio.run(main)
    assert sent == [None, None, "session=abc", "other=1"]


async def _body(chunks: list[bytes], cut: bool) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if cut:
        raise TransientError("video body cut short")


@pytest.mark.parametrize("cut", [False, True])
def test_a_body_is_written_whole_even_when_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: bool
) -> None:
    monkeypatch.setattr(local, "BLOCK", 1000)  # several hand-offs
    chunks = [bytes([i % 251]) * 300 for i in range(37)]
    digest = hashlib.sha256()

    async def main() -> None:
        with open(tmp_path / "v.part", "wb") as fh:
            await local._store(_body(chunks, cut), fh, digest)

    if cut:
        with pytest.raises(TransientError):
            anyio.run(main)
    else:
        anyio.run(main)
    whole = b"".join(chunks)
    assert (tmp_path / "v.part").read_bytes() == whole  # every byte received is kept
    assert digest.hexdigest() == hashlib.sha256(whole).hexdigest()


@pytest.mark.parametrize("name", ["../x.mp4", "a/../../x.mp4", "/abs.mp4"])
def test_an_escaping_output_name_is_refused_by_save_before_any_fetch(
    tmp_path: Path, name: str
) -> None:
    """The engine leaves this check to ``save`` (no path resolved twice a download)."""
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, content=b"video")

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            with pytest.raises(UnsafeURLError):
                await local.LocalStore(tmp_path / "out").save(
                    client,
                    "http://127.0.0.1/v.mp4",
                    name,
                    policy=DownloadPolicy(allow_private=True),
                )

    anyio.run(main)
    assert asked == []
    assert not (tmp_path / "x.mp4").exists()
