"""A job's local ``image_url`` (platform dialect): uploaded once per file through the provider's
upload endpoint, its public URL sent in its place (the mock, like the platform, refuses a body
whose ``image_url`` is no URL), the ledger keeping the request as planned; a path that leaves
the manifest's folder is never uploaded."""

from __future__ import annotations

from pathlib import Path

from runner.mock import MockOptions, base_urls
from runner.mock.testing import IN_PROCESS_ORIGIN
from tests.test_executor import FAST_LIMITS, Harness

MANIFEST = """
version: 1
provider: {{name: higgsfield}}
{limits}
defaults:
  type: image-to-video
  model: higgsfield-ai/dop/standard
  duration: 4
campaigns:
  - name: looks
    prompt: "slow push-in"
    image_url: "{{image}}"
    matrix:
      image: {images}
    variants: 2
"""


def run(tmp_path: Path, images: str) -> Harness:
    h = Harness(tmp_path, MockOptions(latency_min=0, latency_max=0, seed=61))
    (tmp_path / "refs").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "refs" / name).write_bytes(b"\xff\xd8 fake jpeg " + name.encode())
    (tmp_path.parent / "secret.jpg").write_bytes(b"not for the provider")
    h.write(MANIFEST.format(limits=FAST_LIMITS, images=images))
    h.result = h.run(HIGGSFIELD_BASE_URL=base_urls(IN_PROCESS_ORIGIN)["higgsfield"])
    return h


def test_a_local_image_url_is_uploaded_once_and_its_url_sent(tmp_path: Path) -> None:
    """Two files, two variants each: 2 uploads, 4 generations, each body carrying the public
    URL of its own file; the ledger's request still names the local file."""
    h = run(tmp_path, "[refs/a.jpg, refs/b.jpg]")
    assert h.result.counts == {"downloaded": 4}
    stats = h.mock.stats()
    assert (stats["uploads"], stats["generations_created"]) == (2, 4)
    sent = {g.body["image_url"] for g in h.mock.generations.values()}
    assert len(sent) == 2 and all("/_mock/files/" in url for url in sent)
    for row in h.rows():
        local = row.request["image_url"]
        assert local in ("refs/a.jpg", "refs/b.jpg")
        url = h.mock.generations[row.generation_id or ""].body["image_url"]
        token = url.rsplit("/", 1)[1]
        assert h.mock.uploads[token].data == (tmp_path / local).read_bytes()


def test_an_image_url_outside_the_manifests_folder_is_never_uploaded(tmp_path: Path) -> None:
    """A row naming ../secret.jpg fails its jobs with the reason; nothing is uploaded or
    submitted for them, and the other jobs go on."""
    h = run(tmp_path, "[refs/a.jpg, ../secret.jpg]")
    assert h.result.counts == {"downloaded": 2, "failed": 2}
    assert h.mock.stats()["uploads"] == 1
    assert h.mock.stats()["generations_created"] == 2
    for row in h.rows():
        if row.status.value == "failed":
            assert "outside the manifest's folder" in (row.error or "")
            assert row.generation_id is None
