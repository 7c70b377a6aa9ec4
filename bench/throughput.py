"""`make bench` (throughput rows; also `python bench/throughput.py [--quick]`, or
`--only c1000` for the C=1,000 row alone): how close a run comes to what the provider allows,
each figure a ratio to a bound from the same run.

The provider is the mock in a process of its own (loopback, every generation taking exactly L
seconds), so the runner under test has the machine's other core. Rows (median of 3; 1 with
--quick):

- poll 0.5 s:  N=60 C=12 L=1 s, poll_initial = poll_max = 0.5: makespan / ceil(N/C)·L.
               ``--fast`` runs only this row and prints where the time over the bound goes
               (``where_time_goes``).
- SPEC polls:  N=40 C=20 L=20 s, the SPEC's default polling (5 s growing to 30 s), on a fresh
               ledger and on one with the history of such runs: makespan / bound, and status
               calls per job.
- rate R:      4R generations of 12 s polled every second at most (work always waits): the
               busiest 1-second window of API calls at the mock / R, and the calls in the
               first 8 s / 8R (the share of the rate used).
- C=1,000:     N=5,000 C=1,000 L=5 s rps 500: makespan / bound; generations in flight (from
               their submit to the status call that found them done, at the mock): peak, and
               the average while submissions go on.
- CPU:         1,000 instant generations at C=100: the process CPU time of the run against
               that of a bare httpx script making the same calls (``run_bare``), same mock.
- download:    a 1 GiB video from a fast local server: the runner's fetch against curl and
               against curl then an fsync of its file (the same work), and its peak RSS
               (bench/download.py).
- SDK:         the official SDK (`higgsfield-client`, AsyncClient.subscribe, its own 0.5 s
               polling) under a semaphore of C against the same mock's platform dialect, then
               one GET of each video: the same ratios. Skipped, saying why, when not installed.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from download import row as download_row  # bench/ is on sys.path: `python bench/throughput.py`

from runner import app
from runner.mock import base_urls
from runner.mock.testing import MOCK_ENV

MANIFEST = """
version: 1
limits: {{concurrency: {c}, requests_per_second: {rps}, poll_initial: {poll_initial},
          poll_max: {poll_max}, max_jobs: 100000}}
defaults: {{type: text-to-video, duration: 5}}
campaigns:
  - name: bench
    prompt: "shot {{n}} of {tag}"
    matrix:
      n: {values}
"""

SERVE = """
import sys
from runner.mock import MockOptions, create_app
from runner.mock.server import bind_socket, origin_of, serve
latency = float(sys.argv[1])
sock = bind_socket("127.0.0.1", 0)
print(origin_of(sock), flush=True)
serve(create_app(MockOptions(latency_min=latency, latency_max=latency, seed=1)), sock)
"""

SDK_MODEL = "higgsfield-ai/dop/standard"


class Mock:
    """The mock in a subprocess, every generation taking ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(latency)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.origin = self.process.stdout.readline().strip()

    def log(self, videos: bool = False) -> list[dict[str, Any]]:
        """API calls so far (and video downloads with ``videos``), oldest first."""
        entries = httpx.get(f"{self.origin}/_mock/log", timeout=120).json()
        return [
            e
            for e in entries
            if not e["path"].startswith("/_mock/")
            or (videos and e["path"].startswith("/_mock/videos/"))
        ]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()

    def __enter__(self) -> Mock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Shape:
    """One workload: N generations of L seconds at concurrency C."""

    n: int
    c: int
    latency: float
    rps: float = 1000.0
    poll_initial: float = 5.0
    poll_max: float = 30.0

    @property
    def bound(self) -> float:
        return math.ceil(self.n / self.c) * self.latency


@dataclass
class Measured:
    makespan: float
    calls: list[dict[str, Any]]  # API calls and video downloads, at the mock
    n: int
    start: float = math.nan  # time.monotonic() when the run began: the mock's clock

    def status_per_job(self) -> float:
        polls = [e for e in self.calls if e["method"] == "GET" and _api(e)]
        return len(polls) / self.n

    def in_flight(self) -> tuple[int, float]:
        """Peak generations in flight, and the average while submissions went on."""
        submitted = {e["generation_id"]: e["time"] for e in self.calls if e["method"] == "POST"}
        done: dict[str, float] = {}
        for e in self.calls:
            if e["method"] == "GET" and _api(e) and e.get("generation_id") in submitted:
                done[e["generation_id"]] = e["time"]
        changes = sorted(
            [(t, 1) for g, t in submitted.items() if g in done] + [(t, -1) for t in done.values()]
        )
        start, end = min(submitted.values()), max(submitted.values())
        level, peak, area, previous = 0, 0, 0.0, start
        for t, step in changes:
            overlap = min(t, end) - max(previous, start)
            if overlap > 0:
                area += level * overlap
            previous = t
            level += step
            peak = max(peak, level)
        return peak, area / max(end - start, 1e-9)


def _api(entry: dict[str, Any]) -> bool:
    return not entry["path"].startswith("/_mock/")


def where_time_goes(m: Measured, shape: Shape) -> str:
    """Where a run's time over the bound went, from the mock's log (its clock is
    ``time.monotonic``, the run's too): the run's start to the first submit; each wave's lag
    between a generation ending (its submit + L) and the status call that saw it, and between
    that call and the submit that took its slot; and the last video's request to the end."""
    posts = sorted(e["time"] for e in m.calls if e["method"] == "POST")
    made = {e["generation_id"]: e["time"] for e in m.calls if e["method"] == "POST"}
    seen: dict[str, float] = {}
    for e in m.calls:
        gid = e.get("generation_id")
        if e["method"] == "GET" and _api(e) and gid in made and gid not in seen:  # noqa: SIM102
            if e["time"] >= made[gid] + shape.latency:  # the first call after it ended
                seen[gid] = e["time"]
    lags = sorted((made[g], seen[g] - made[g] - shape.latency) for g in seen)
    found = sorted(seen.values())
    refill = [p - f for p, f in zip(posts[shape.c :], found, strict=False)]
    videos = [e["time"] for e in m.calls if e["path"].startswith("/_mock/videos/")]
    parts = [f"start → first submit {posts[0] - m.start:.3f} s"]
    for w in range(math.ceil(m.n / shape.c)):
        wave = [lag for _, lag in lags[w * shape.c : (w + 1) * shape.c]]
        back = refill[w * shape.c : (w + 1) * shape.c]
        gap = f", seen → next submit {statistics.mean(back):.3f}" if back else ""
        parts.append(f"wave {w + 1}: lag {statistics.mean(wave):.3f} (max {max(wave):.3f}){gap}")
    polls = m.status_per_job()
    end = m.start + m.makespan
    parts.append(f"last video request → end {end - max(videos):.3f} s; {polls:.1f} polls/job")
    return "; ".join(parts)


def run_runner(mock: Mock, shape: Shape, state: Path, tag: str) -> Measured:
    """One `runner run` in this process against ``mock``."""
    state.parent.mkdir(parents=True, exist_ok=True)
    manifest = state.parent / f"{tag}.yaml"
    manifest.write_text(
        MANIFEST.format(
            c=shape.c,
            rps=shape.rps,
            poll_initial=shape.poll_initial,
            poll_max=shape.poll_max,
            tag=tag,
            values=list(range(shape.n)),
        )
    )
    env = app.Environment(
        environ={**MOCK_ENV, "HIGGSFIELD_BASE_URL": base_urls(mock.origin)["higgsfieldapi"]}
    )
    before = len(mock.log(videos=True))
    start = time.monotonic()
    result = app.run(manifest, state, app.RunOptions(), env)
    makespan = time.monotonic() - start
    assert result.counts == {"downloaded": shape.n}, result.counts
    return Measured(makespan, mock.log(videos=True)[before:], shape.n, start)


def run_sdk(mock: Mock, shape: Shape, tag: str) -> Measured:
    """The official SDK: subscribe under a semaphore of C, then one GET of the video."""
    from higgsfield_client import AsyncClient

    async def main() -> None:
        client = AsyncClient(
            base_url=base_urls(mock.origin)["higgsfield"], api_key=MOCK_ENV["HF_KEY"]
        )
        gate = asyncio.Semaphore(shape.c)
        async with httpx.AsyncClient(timeout=60) as videos:

            async def one(i: int) -> None:
                async with gate:
                    body = {"prompt": f"shot {i} of {tag}", "duration": 5}
                    result = await client.subscribe(SDK_MODEL, body)
                await videos.get(result["video"]["url"])

            await asyncio.gather(*(one(i) for i in range(shape.n)))

    before = len(mock.log())
    start = time.perf_counter()
    asyncio.run(main())
    return Measured(time.perf_counter() - start, mock.log()[before:], shape.n)


def sdk_missing() -> str | None:
    try:
        import higgsfield_client  # noqa: F401
    except ImportError:
        return "higgsfield-client is not installed (pip install higgsfield-client)"
    return None


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def over(runs: list[Measured], bound: float) -> str:
    """The median makespan of ``runs`` as a ratio to ``bound``."""
    return f"{median([m.makespan for m in runs]) / bound:.2f}×"


def repeat(times: int, fn: Callable[[int], Measured]) -> list[Measured]:
    return [fn(i) for i in range(times)]


FAST = Shape(n=60, c=12, latency=1.0, poll_initial=0.5, poll_max=0.5)


def fast_row(tmp: Path, reps: int, detail: bool = False) -> tuple[str, str, str, str]:
    """The poll 0.5 s row; with ``detail``, where each run's time went (printed)."""
    missing = sdk_missing()
    fast = FAST
    with Mock(fast.latency) as mock:
        fresh = repeat(reps, lambda i: run_runner(mock, fast, tmp / f"fast{i}" / "state", f"f{i}"))
        state = tmp / "fast0" / "state"  # the first run's ledger: these learn from its history
        learned = repeat(reps, lambda i: run_runner(mock, fast, state, f"fh{i}"))
        sdk = [] if missing else repeat(reps, lambda i: run_sdk(mock, fast, f"sf{i}"))
    if detail:
        for name, runs in (("fresh", fresh), ("history", learned)):
            for m in runs:
                print(f"{name} {m.makespan / fast.bound:.3f}×: {where_time_goes(m, fast)}")
    return (
        "makespan / bound, N=60 C=12 L=1 s, poll 0.5 s: fresh ledger / with history",
        f"{over(fresh, fast.bound)} / {over(learned, fast.bound)}",
        f"skipped: {missing}" if missing else over(sdk, fast.bound),
        "≤ 1.05×",
    )


def throughput_rows(tmp: Path, reps: int = 3) -> list[tuple[str, str, str, str]]:
    """(measure, runner, official SDK, goal) rows, measured now."""
    rows: list[tuple[str, str, str, str]] = [fast_row(tmp, reps)]
    missing = sdk_missing()
    sdk_note = f"skipped: {missing}" if missing else ""

    spec = Shape(n=40, c=20, latency=20.0, rps=100)
    with Mock(spec.latency) as mock:
        state = tmp / "spec" / "state"  # one ledger: the first run is fresh, the others learn
        ours = repeat(reps + 1, lambda i: run_runner(mock, spec, state, f"s{i}"))
        sdk = [] if missing else repeat(reps, lambda i: run_sdk(mock, spec, f"ss{i}"))
    fresh, learned = ours[0], ours[1:]
    sdk_calls = median([m.status_per_job() for m in sdk])
    rows.append((
        "makespan / bound, SPEC default polling, N=40 C=20 L=20 s: fresh ledger / with history",
        f"{over([fresh], spec.bound)} / {over(learned, spec.bound)}",
        sdk_note or f"{over(sdk, spec.bound)} (at {sdk_calls:.1f} status calls/job)",
        "≤ 1.08×",
    ))  # fmt: skip
    rows.append((
        "status calls per job at those defaults: fresh / with history",
        f"{fresh.status_per_job():.1f} / {median([m.status_per_job() for m in learned]):.1f}",
        sdk_note or f"{sdk_calls:.1f}",
        "≤ 3",
    ))  # fmt: skip

    rates = []
    for rps in (5, 50):
        shape = Shape(n=4 * rps, c=4 * rps, latency=12.0, rps=rps, poll_initial=0.5, poll_max=1)
        with Mock(shape.latency) as mock:
            got = run_runner(mock, shape, tmp / f"rate{rps}" / "state", f"r{rps}")
        times = sorted(e["time"] for e in got.calls if _api(e))
        busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
        used = sum(1 for t in times if times[0] <= t < times[0] + 8.0) / (8.0 * rps)
        rates.append(f"{used:.3f} (busiest window {busiest / rps:.2f}×R)")
    rows.append((
        "API calls / requests_per_second while work waits, R=5 / R=50",
        " / ".join(rates), "—", "≥ 0.99, busiest ≤ 1×R",
    ))  # fmt: skip

    rows.append(big_row(tmp))
    rows.append(cpu_row(reps))
    rows.append(download_row(reps=reps))
    return rows


def big_row(tmp: Path) -> tuple[str, str, str, str]:
    """N=5,000 C=1,000 L=5 s at rps 500, once (``--only c1000`` runs this row alone): makespan
    / bound, generations in flight, and this process's CPU seconds for the run."""
    big = Shape(n=5000, c=1000, latency=5.0, rps=500, poll_initial=0.5, poll_max=2)
    with Mock(big.latency) as mock:
        cpu = time.process_time()
        got = run_runner(mock, big, tmp / "big" / "state", "big")
        cpu = time.process_time() - cpu
    peak, average = got.in_flight()
    return (
        "N=5,000 C=1,000 L=5 s (rps 500): makespan / bound; in flight peak, average",
        f"{got.makespan / big.bound:.2f}×; {peak}, {average:.0f} (runner CPU {cpu:.1f} s)",
        "—",
        "≤ 1.3×; ≥ 950 held",
    )


def run_bare(mock: Mock, shape: Shape, tag: str) -> Measured:
    """A bare httpx script making the runner's calls: submit, status until done, one GET of
    the video; C at a time, no ledger, no files."""
    base = base_urls(mock.origin)["higgsfieldapi"]
    auth = {"Authorization": f"Bearer {MOCK_ENV['HIGGSFIELD_API_KEY']}"}

    async def one(client: httpx.AsyncClient, i: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            body = {"type": "text-to-video", "prompt": f"shot {i} of {tag}", "duration": 5}
            answer = await client.post(f"{base}/generate", json=body, headers=auth)
            generation = answer.json()["generation_id"]
            await asyncio.sleep(shape.poll_initial)
            while not (status := (await client.get(f"{base}/status/{generation}", headers=auth))
                       .json()).get("video_url"):  # fmt: skip
                await asyncio.sleep(shape.poll_initial)
        await client.get(status["video_url"])

    async def main() -> None:
        gate = asyncio.Semaphore(shape.c)
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(one(client, i, gate) for i in range(shape.n)))

    before = len(mock.log())
    start = time.process_time()
    asyncio.run(main())
    return Measured(time.process_time() - start, mock.log()[before:], shape.n)


def cpu_row(reps: int) -> tuple[str, str, str, str]:
    """Process CPU time of a runner run of 1,000 instant generations against the same calls
    made by a bare httpx script (``run_bare``), both in this process, on one mock."""
    shape = Shape(n=1000, c=100, latency=0.0, rps=100_000, poll_initial=0.05, poll_max=0.05)
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmpdir, Mock(shape.latency) as mock:
        for i in range(reps):
            start = time.process_time()
            got = run_runner(mock, shape, Path(tmpdir) / f"cpu{i}" / "state", f"c{i}")
            ours.append(time.process_time() - start)
            calls = got.status_per_job()
            bare.append(run_bare(mock, shape, f"b{i}").makespan)  # its CPU seconds
    runner_s, bare_s = median(ours), median(bare)
    return (
        "CPU per 1,000 jobs (instant generations, C=100) vs a bare httpx script making the "
        "same calls",
        f"{runner_s / bare_s:.2f}× ({runner_s:.1f} s vs {bare_s:.1f} s; {calls:.1f} polls/job)",
        "—",
        "≤ 1.1×",
    )


def print_rows(rows: list[tuple[str, str, str, str]]) -> None:
    print("| measure | runner | official SDK | goal |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    reps = 1 if "--quick" in sys.argv else 3
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv[:-1] else None
    if only not in (None, "c1000"):
        sys.exit(f"--only: the one row that runs alone is c1000, not {only!r}")
    with tempfile.TemporaryDirectory() as tmpdir:
        if only:
            print_rows([big_row(Path(tmpdir))])
        elif "--fast" in sys.argv:
            print_rows([fast_row(Path(tmpdir), reps, detail=True)])
        else:
            print_rows(throughput_rows(Path(tmpdir), reps))


if __name__ == "__main__":
    main()
