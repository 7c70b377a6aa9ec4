"""`make bench` (download row; also `python bench/download.py [MiB]`): one large video fetched
from a fast local server by the runner's download path (``runner.outputs.local.download``:
policy checks, Content-Length, sha256, ``.part`` file, fsync, rename) against two bounds
measured in the same run: curl fetching the same URL to a file (the issue's goal), and curl
then an fsync of its file, timed together (the same work: the runner makes every video
durable before it calls it saved, curl leaves it in the page cache). And the runner's peak RSS.

The server is a process of its own answering every GET with ``socket.sendfile`` from a
sparse file (the page cache, no disk), so neither side waits on it. Each side runs in a
process of its own; the figure is the median of ``reps`` runs of each. The CPU seconds of
each side (the runner's after its imports, curl's whole) are reported beside the times: on a
shared machine they are the steadier comparison. Writing a GiB to the disk takes a second or
more on most machines, so the plain-curl ratio is bounded below by the disk, not the runner.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVE = r"""
import socket, sys, threading
path, size = sys.argv[1], int(sys.argv[2])
sock = socket.create_server(("127.0.0.1", 0))
print(f"http://127.0.0.1:{sock.getsockname()[1]}/video.mp4", flush=True)
def answer(conn):
    with conn, open(path, "rb") as fh:
        while conn.recv(65536).find(b"\r\n\r\n") < 0:
            pass
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % size)
        conn.sendfile(fh)
while True:
    threading.Thread(target=answer, args=(sock.accept()[0],), daemon=True).start()
"""

FETCH = r"""
import json, sys, time
from pathlib import Path
from runner.app.common import Environment, run_loop
from runner.outputs.local import download
from runner.outputs.pinned import pinned_client
from runner.outputs.policy import DownloadPolicy
url, dest = sys.argv[1], Path(sys.argv[2])
def peak_mb():  # VmHWM: ru_maxrss would count the parent's peak (Linux keeps it across exec)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
async def main():
    async with pinned_client() as client:
        policy = DownloadPolicy.for_base_url(url)
        return await download(client, url, dest, policy=policy)
start, cpu = time.perf_counter(), time.process_time()
saved = run_loop(Environment(), main)  # as a run does: on uvloop when installed
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "bytes": saved.bytes,
                  "rss_mb": peak_mb()}))
"""


def measure(mib: int = 1024, reps: int = 3) -> dict[str, float]:
    """Runner, curl and curl-then-fsync times (median), the runner's ratios to both, the
    runner's peak RSS."""
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is not installed (apt-get install -y curl)")
    size = mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        source = tmp / "source.mp4"
        with open(source, "wb") as fh:
            fh.truncate(size)  # sparse: served from the page cache
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(source), str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            ours, theirs, durable, rss, our_cpu, their_cpu = [], [], [], [], [], []
            for i in range(reps):
                out = tmp / f"runner{i}.mp4"
                got = json.loads(
                    subprocess.run(
                        [sys.executable, "-c", FETCH, url, str(out)],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                )
                assert got["bytes"] == size, got
                ours.append(got["seconds"])
                our_cpu.append(got["cpu"])
                rss.append(got["rss_mb"])
                out.unlink()
                start, before = time.perf_counter(), _children_cpu()
                subprocess.run([curl, "-sS", "-o", str(tmp / "curl.mp4"), url], check=True)
                theirs.append(time.perf_counter() - start)
                their_cpu.append(_children_cpu() - before)
                _fsync(tmp / "curl.mp4")
                durable.append(time.perf_counter() - start)
                (tmp / "curl.mp4").unlink()
        finally:
            server.terminate()
            server.wait()
    runner_s, curl_s = statistics.median(ours), statistics.median(theirs)
    curl_fsync_s = statistics.median(durable)
    runner_cpu, curl_cpu = statistics.median(our_cpu), statistics.median(their_cpu)
    return {
        "runner_s": runner_s,
        "curl_s": curl_s,
        "ratio": runner_s / curl_s,
        "curl_fsync_s": curl_fsync_s,
        "durable_ratio": runner_s / curl_fsync_s,
        "rss_mb": max(rss),
        "runner_cpu_s": runner_cpu,
        "curl_cpu_s": curl_cpu,
        "cpu_ratio": runner_cpu / curl_cpu,
    }


def _fsync(path: Path) -> None:
    """Make a file durable as the runner does its videos (then its folder, after the rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _children_cpu() -> float:
    """CPU seconds (user and system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def row(mib: int = 1024, reps: int = 3) -> tuple[str, str, str, str]:
    """The (measure, runner, official SDK, goal) row of bench/throughput.py's table."""
    got = measure(mib, reps)
    return (
        f"{mib / 1024:g} GiB download from a fast local server: time vs curl "
        "(vs curl then fsync); peak RSS",
        f"{got['ratio']:.2f}× ({got['durable_ratio']:.2f}×): {got['runner_s']:.2f} s vs "
        f"{got['curl_s']:.2f} s ({got['curl_fsync_s']:.2f} s); CPU "
        f"{got['runner_cpu_s']:.2f} s vs {got['curl_cpu_s']:.2f} s; {got['rss_mb']:.0f} MB",
        "—",
        "≤ 1.3×, RSS flat",
    )


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1024), indent=2))
