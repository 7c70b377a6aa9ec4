"""Memory of a big upload to S3: a 512 MiB video streamed through ``S3Store`` into moto.

The upload runs in a child process that reports its own peak RSS (``VmHWM``), so moto's
memory, which holds the object in this process, is not counted. The bound is fixed: peak RSS
under ``LIMIT_MB`` whatever the video's size (parts are ``PART_SIZE`` bytes, a few at a time).
``python bench/s3_upload.py`` prints the ratio and exits 1 above it; ``make bench`` shows it
as the ``s3upload`` row.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid

SIZE = 512 * 1024 * 1024
LIMIT_MB = 150.0
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}

CHILD = r"""
import json, sys, time
import anyio, httpx
from runner.outputs import open_store
from runner.outputs.fetch import DownloadPolicy

SIZE = int(sys.argv[2])
BLOCK = bytes(range(256)) * 4096  # 1 MiB

def status_mb(field):  # ru_maxrss would count the parent too: Linux keeps it across exec
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

async def body():
    for _ in range(SIZE // len(BLOCK)):
        yield BLOCK

def handler(request):
    return httpx.Response(200, headers={"Content-Length": str(SIZE)}, content=body())

async def main():
    store = open_store(sys.argv[1])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await store.save(client, "http://127.0.0.1/big.mp4", "big.mp4",
                                policy=DownloadPolicy(allow_private=True))

baseline = status_mb("VmRSS")
start = time.perf_counter()
saved = anyio.run(main)
seconds = time.perf_counter() - start
print(json.dumps({"bytes": saved.bytes, "seconds": seconds,
                  "baseline_mb": baseline, "peak_mb": status_mb("VmHWM")}))
"""


def measure(size: int = SIZE) -> dict[str, float]:
    """Upload ``size`` bytes in a child process: its ``bytes``, ``seconds``, ``baseline_mb``
    (RSS after imports) and ``peak_mb``."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name=KEYS["AWS_REGION"],
        )
        client.create_bucket(Bucket=bucket)
        child = subprocess.run(
            [sys.executable, "-c", CHILD, f"s3://{bucket}/bench", str(size)],
            env={**os.environ, **KEYS, "AWS_ENDPOINT_URL": endpoint},
            capture_output=True,
            text=True,
        )
        if child.returncode:
            raise RuntimeError(f"the upload failed ({child.returncode}):\n{child.stderr}")
        result: dict[str, float] = json.loads(child.stdout)
        stored = client.head_object(Bucket=bucket, Key="bench/big.mp4")["ContentLength"]
        assert stored == size == result["bytes"], (stored, size, result)
        return result
    finally:
        server.stop()


def main() -> int:
    result = measure()
    print(
        f"uploaded {result['bytes'] / 2**20:.0f} MiB in {result['seconds']:.1f}s; peak RSS "
        f"{result['peak_mb']:.0f} MB ({result['baseline_mb']:.0f} MB after imports), "
        f"limit {LIMIT_MB:.0f} MB"
    )
    return 0 if result["peak_mb"] < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
