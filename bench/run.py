"""`make bench`: speed and memory of the pipeline, each as a ratio to a bound measured in the
same run on the same machine (so the numbers compare across machines; no absolute timings).

- expand:     expanding a 10,000-job manifest vs. the floor of that work (hashing the same
              10,000 canonical JSON documents that make the keys). Lower is better.
- memory:     peak traced memory of that expansion vs. the size of the jobs' JSON. Lower is better.
- executor:   jobs/s of a full run (submit, poll, download, ledger writes) against the in-process
              mock vs. the same HTTP calls made bare, with no ledger and no scheduling.
              Higher is better; 1.0 would mean the runner costs nothing over its HTTP calls.
- rate:       API calls/s achieved with requests_per_second=20 vs. 20. Close to (and never
              above) 1/1.01 is right: calls are spaced 10 ms per second wider than 1/rps.
- s3upload:   peak RSS of a process streaming a 512 MiB video into S3 (moto) vs. the fixed
              150 MB it must stay under (bench/s3_upload.py). Below 1 is a pass.

Then the throughput table of bench/throughput.py (makespan against its bound, status calls
per job, rate use, thousands in flight, CPU per 1,000 jobs against a bare httpx script, a
1 GiB download against curl; the official SDK beside it where installed).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
from s3_upload import LIMIT_MB, measure  # bench/ is on sys.path: `python bench/run.py`
from throughput import print_rows, throughput_rows

from runner import app
from runner.jobs import expand
from runner.manifest import load_manifest
from runner.mock import MockOptions, base_urls, create_app
from runner.mock.testing import IN_PROCESS_ORIGIN, MOCK_ENV

BIG = """
version: 1
limits: {{max_jobs: 20000}}
defaults: {{type: text-to-video, duration: 5, resolution: 1080p}}
budget:
  prices: [{{match: {{resolution: 1080p}}, credits_per_second: 5}}, {{match: {{}}, credits: 10}}]
campaigns:
  - name: big
    prompt: "{{a}} meets {{b}} at {{c}}, take {{d}}"
    matrix:
      a: {a}
      b: {b}
      c: {c}
      d: {d}
"""


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_expand(tmp: Path) -> dict[str, float]:
    values = [f"[{', '.join(f'{name}{i}' for i in range(10))}]" for name in "abcd"]
    path = tmp / "big.yaml"
    path.write_text(BIG.format(a=values[0], b=values[1], c=values[2], d=values[3]))
    manifest = load_manifest(path)
    jobs = expand(manifest)
    assert len(jobs) == 10_000
    docs = [[j.campaign, j.vars, j.request, j.variant] for j in jobs]

    def floor() -> None:
        for doc in docs:
            blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            hashlib.sha256(blob.encode()).hexdigest()

    expand_s = min(timed(lambda: expand(manifest)) for _ in range(3))
    floor_s = min(timed(floor) for _ in range(3))
    tracemalloc.start()
    expand(manifest)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = len(json.dumps([[j.key, j.vars, j.request, j.path] for j in jobs]))
    return {"expand": expand_s / floor_s, "memory": peak / size}


MANIFEST = """
version: 1
limits: {{concurrency: 32, requests_per_second: {rps}, download_concurrency: 8,
          poll_initial: 0.001, poll_max: 0.01}}
defaults: {{type: text-to-video, duration: 2}}
campaigns:
  - name: bench
    prompt: "shot {{n}}"
    matrix:
      n: {values}
"""


def run_manifest(tmp: Path, jobs: int, rps: float) -> tuple[float, int]:
    """A full run of ``jobs`` jobs in-process; returns (seconds, API calls the mock saw)."""
    mock = create_app(MockOptions(latency_min=0.0, latency_max=0.0, seed=1))
    manifest = tmp / f"run-{jobs}-{rps}.yaml"
    manifest.write_text(MANIFEST.format(rps=rps, values=list(range(jobs))))

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=mock))

    env = app.Environment(
        environ={**MOCK_ENV, "HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)["higgsfieldapi"]},
        api_client=client,
        download_client=client,
    )
    state = tmp / f"state-{jobs}-{rps}"
    seconds = timed(lambda: app.run(manifest, state, app.RunOptions(), env))
    calls = [e for e in mock.state.mock.log_entries() if not e["path"].startswith("/_mock/")]
    return seconds, len(calls)


def bare_calls(jobs: int) -> float:
    """The HTTP floor of a run: submit, one status and one download per job, 32 at a time."""
    app = create_app(MockOptions(latency_min=0.0, latency_max=0.0, seed=1))
    base = base_urls(IN_PROCESS_ORIGIN)["higgsfieldapi"]
    auth = {"Authorization": f"Bearer {MOCK_ENV['HIGGSFIELD_API_KEY']}"}

    async def one(client: httpx.AsyncClient, n: int, gate: anyio.Semaphore) -> None:
        async with gate:
            body = {"type": "text-to-video", "prompt": f"shot {n}", "duration": 2}
            r = await client.post(f"{base}/generate", json=body, headers=auth)
            gid = r.json()["generation_id"]
            status = (await client.get(f"{base}/status/{gid}", headers=auth)).json()
            await client.get(status["video_url"])

    async def main() -> None:
        gate = anyio.Semaphore(32)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        async with client, anyio.create_task_group() as tg:
            for n in range(jobs):
                tg.start_soon(one, client, n, gate)

    return timed(lambda: anyio.run(main))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        results = bench_expand(tmp)
        jobs = 300
        run_s, _ = run_manifest(tmp, jobs, rps=100_000)
        results["executor"] = bare_calls(jobs) / run_s
        rate_s, calls = run_manifest(tmp, 40, rps=20)
        results["rate"] = (calls / rate_s) / 20
        results["s3upload"] = measure()["peak_mb"] / LIMIT_MB
    notes = {
        "expand": "expand time / key-hashing floor (lower is better)",
        "memory": "peak traced bytes / jobs JSON bytes (lower is better)",
        "executor": "bare HTTP time / full run time (higher is better, max 1)",
        "rate": "achieved API calls/s / requests_per_second (at most 1)",
        "s3upload": "peak RSS uploading 512 MiB to S3 / 150 MB (below 1)",
    }
    for name, ratio in results.items():
        print(f"{name:9} {ratio:8.2f}   {notes[name]}")
    print()
    with tempfile.TemporaryDirectory() as tmpdir:  # bench/throughput.py: median of 3
        print_rows(throughput_rows(Path(tmpdir)))


if __name__ == "__main__":
    main()
