"""A real S3 endpoint for the tests: moto's server on a free loopback port, one per session.

``s3_server`` is the running server: ``.environ`` holds the AWS variables that point the
runner at it, and its helpers use boto3 for what the runner never does (creating buckets,
listing objects and pending multipart uploads). ``s3_bucket`` is a fresh empty bucket for one
test, so tests never see each other's objects. moto is imported only when a test asks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    """moto's S3 on loopback, and a boto3 client for checking what is in it."""

    endpoint: str
    client: Any  # a boto3 S3 client (boto3 has no type stubs here)

    @property
    def environ(self) -> dict[str, str]:
        """The AWS variables that send the runner's S3 requests to this server."""
        return {**S3_KEYS, "AWS_ENDPOINT_URL": self.endpoint}

    def new_bucket(self) -> str:
        """Create an empty bucket with a unique name and return the name."""
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``, sorted."""
        answer = self.client.list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in answer.get("Contents", []))

    def body(self, bucket: str, key: str) -> bytes:
        """The bytes of one object."""
        data: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted."""
        uploads: list[dict[str, Any]] = self.client.list_multipart_uploads(Bucket=bucket).get(
            "Uploads", []
        )
        return uploads

    def parts(self, bucket: str, upload: dict[str, Any]) -> int:
        """How many parts a pending multipart upload holds."""
        answer = self.client.list_parts(
            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
        return len(answer.get("Parts", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, on a port the system picked, for the whole session."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_KEYS["AWS_REGION"],
    )
    try:
        yield S3Server(endpoint, client)
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.new_bucket()
