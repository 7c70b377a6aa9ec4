"""The report's cards from the ledger's rows: what twins (the seeds and variants of one
matrix row) share is worked out once, and every card is still byte for byte the card that
jinja2 renders from what it shows, worked out the plain way from the decoded row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runner.engine.budget import charged
from runner.jobs import expand
from runner.ledger import JobRow, JobStatus, ReportRow, default_ledger_url, open_ledger
from runner.manifest import load_manifest
from runner.report.cards import REQUEST_SHOWN, Cards, _Twins, credits_text, tidy_error
from runner.report.links import Link
from runner.report.markup import Card
from tests.test_report_markup import jinja_card

S = JobStatus
MANIFEST = """\
version: 1
souls:
  ava: {name: ava_v1, images: [https://cdn.example.com/ava.jpg]}
defaults: {type: text-to-video, duration: 2, aspect_ratio: "9:16"}
campaigns:
  - name: twins
    prompt: "<b>{subject}</b> & 'q' {n}"
    matrix:
      subject: [A chef, "<i>dancer</i> 100%?", "é ✓"]
      n: [1, 2]
    seeds: [7, 8, 1234]
  - name: variants
    tags: [weekly, x.y]
    prompt: a fox {subject}
    matrix:
      subject: [red, blue]
    variants: 3
  - name: soulful
    soul: ava
    type: image-to-video
    prompt: ava waves
    image_url: "https://cdn.example.com/looks/look1.jpg?X-Signature=SECRET"
    seeds: [1, 2]
  - name: plain
    prompt: "plain {k}"
    resolution: 720p
    model: m1
    matrix:
      k: [1, 2, 3]
  - name: odd
    prompt: "odd {k}"
    matrix:
      k: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
"""
# Request texts a ledger may hold besides the runner's own: each replaces an "odd" job's.
ODD_REQUESTS = [
    '{"prompt":"compact","seed":5}',
    '{"prompt":"compact","seed":6}',
    '{"prompt": "nested", "extra": {"seed": 1}, "seed": 2}',
    '{"prompt": "nested", "extra": {"seed": 1}, "seed": 3}',
    '{"prompt": "nested", "extra": {"seed": 4}, "seed": 3}',
    '{"prompt": "nested", "extra": {"seed": 4}, "seed": 3, "duration": 9}',
    '{"seed": -3, "prompt": "neg"}',
    '{"seed": 1.5, "prompt": "float"}',
    '{"seed": "abc", "prompt": "str"}',
    '{"seed": 0, "prompt": "zero"}',
    '{"seed": 10, "prompt": "zero"}',
    '{"seed": 10, "prompt": "zero2"}',
    '{"prompt": "nul \\u0000 inside", "seed": 1}',
    '{"prompt": "nul \\u0000 inside", "seed": 2}',
    '{"prompt": "\\u0000seed\\u0000", "seed": 2}',
    '{"prompt": ["list", 1], "seed": 2, "duration": 3, "model": {"a": 1}}',
    '{"prompt": "no seed at all"}',
    '{"prompt": "no seed at all"}',
    "{}",
]


def reference(row: JobRow, link: Link) -> Card:
    """What the card of ``row`` shows, from its decoded columns (the report's rules)."""
    request, matrix = row.request, row.vars
    seed = request.get("seed")
    label = None if seed is None else f"seed {seed}"
    if row.variant is not None:
        label = f"variant {row.variant}" + (f" · seed {seed}" if seed is not None else "")
    fields = [(name, text(value)) for name, value in matrix.items()]
    for name, shown in REQUEST_SHOWN:
        value = request.get(name)
        if value is not None and name not in matrix:
            fields.append((shown, f"{value} s" if name == "duration" else text(value)))
    if row.soul:
        fields.append(("soul", row.soul))
    if isinstance(request.get("image_url"), str) and request["image_url"]:
        fields.append(("source image", request["image_url"].split("?")[0].rsplit("/")[-1]))
    refunded = row.status is S.FAILED and row.generation_id and not charged(row)
    fields.append(("credits", credits_text(row.credits) + (" (refunded)" if refunded else "")))
    if row.attempts > 1:
        fields.append(("attempts", str(row.attempts)))
    ids = [
        ("generation", row.generation_id),
        ("sha256", row.sha256),
        ("bytes", None if row.bytes is None else f"{row.bytes:,}"),
        ("file", row.location or row.path),
        ("manifest", row.manifest),
        ("updated", row.updated_at),
    ]
    prompt = request.get("prompt")
    return Card(
        row.status.value,
        row.key,
        row.campaign,
        " ".join(row.tags),
        *link,
        label,
        row.soul,
        None if prompt is None else text(prompt),
        tidy_error(row.error),
        fields,
        [(name, value) for name, value in ids if value is not None and value != ""],
    )


def text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def odd_ledger(tmp_path: Path) -> str:
    """The manifest's jobs in every status and with odd values: failed with and without a
    generation, retried, downloaded with and without a hash or size, NUL in a soul and an
    error, the odd request texts; the ledger's URL."""
    manifest_file = tmp_path / "m.yaml"
    manifest_file.write_text(MANIFEST, encoding="utf-8")
    manifest = load_manifest(manifest_file)
    url = default_ledger_url(tmp_path / "state")
    with open_ledger(url) as ledger:
        ledger.record_plan(str(manifest.path), expand(manifest))
        for i, row in enumerate(ledger.jobs()):
            kind, key = i % 7, row.key
            if kind == 6:
                continue  # pending
            ledger.transition(key, S.SUBMITTING)
            if kind == 5:
                ledger.transition(key, S.FAILED, error="submit refused: <b>Bad</b>: <b>bad</b>")
                continue
            ledger.transition(key, S.QUEUED, generation_id=f"gen-{key[:5]}")
            if kind == 4:
                ledger.transition(key, S.FAILED, error="nsfw: see https://x.example/v?sig=1")
                continue
            if kind == 3:
                ledger.bump_attempts(key)
                ledger.bump_attempts(key)
                continue
            ledger.transition(key, S.COMPLETED, video_url="https://cdn.example.com/x.mp4")
            ledger.transition(
                key,
                S.DOWNLOADED,
                location=f"/videos/{row.path}",
                bytes=None if kind == 2 else i * 1000,
                sha256=None if kind == 1 else "ab" * 32,
            )
    conn = sqlite3.connect(tmp_path / "state" / "ledger.db")
    keys = [k for (k,) in conn.execute("SELECT key FROM jobs ORDER BY manifest, job_index, key")]
    odd = [
        k for (k,) in conn.execute("SELECT key FROM jobs WHERE campaign = 'odd' ORDER BY job_index")
    ]
    with conn:
        for key, request in zip(odd, ODD_REQUESTS, strict=False):
            conn.execute("UPDATE jobs SET request = ? WHERE key = ?", [request, key])
        odd_vars = '{"a": [1, 2], "b": null, "c": "<&>"}'
        conn.execute("UPDATE jobs SET vars = ? WHERE key = ?", [odd_vars, keys[30]])
        conn.execute("UPDATE jobs SET error = ? WHERE key = ?", ["odd \x00 nul", keys[31]])
        conn.execute("UPDATE jobs SET soul = ? WHERE key = ?", ["ava\x00x", keys[32]])
        conn.execute("UPDATE jobs SET status = 'orphaned' WHERE key = ?", [keys[33]])
    conn.close()
    return url


LINKS: list[Link] = [
    ("videos/a%20b.mp4", "videos/a b.mp4", None),
    (None, "", "/gone/<x>.mp4"),
    (None, "", None),
    ("https://b.example/v.mp4?X-Amz-Signature=1&b=2", "s3://b/v.mp4", None),
]


def test_every_card_is_what_jinja_writes_of_what_its_row_shows(tmp_path: Path) -> None:
    """Cards.html() of each row in the ledger's order (twins sharing their part) is the card
    template rendered by jinja2 from what the decoded row shows, for seeds, variants, souls,
    tags, failures, retries, NULs and request texts the runner does not write."""
    with open_ledger(odd_ledger(tmp_path), readonly=True) as ledger:
        rows = ledger.jobs()
        shown = list(ledger.report_rows())
    assert len(rows) == len(shown) == 49
    cards = Cards()
    for i, (row, report) in enumerate(zip(rows, shown, strict=True)):
        link = LINKS[i % len(LINKS)] if row.status is S.DOWNLOADED else LINKS[2]
        html = cards.html(report, link, tuple(json.loads(report.tags or "[]")))
        assert html == jinja_card(reference(row, link)), (row.key, row.request)


def report_row(request: str | None, **columns: Any) -> ReportRow:
    values: dict[str, Any] = {name: None for name in ReportRow._fields}
    values |= {"key": "k", "status": S.PENDING, "manifest": "/m.yaml", "campaign": "c"}
    values |= {"tags": "[]", "vars": '{"a": 1}', "credits": 1.0, "attempts": 0, "path": "p"}
    return ReportRow(**values | {"request": request} | columns)


@pytest.mark.parametrize(
    ("first", "other", "seed"),
    [
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": 7}', "7"),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": 1234}', "1234"),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": 0}', "0"),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "b", "seed": 8}', None),
        ('{"seed": 7, "x": 1}', '{"seed": 8, "y": 1}', None),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": 8, "x": 1}', None),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": -8}', None),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": 8.5}', None),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": 08}', None),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": ٣}', None),
        ('{"prompt": "a", "seed": 7}', '{"prompt": "a", "seed": "8"}', None),
        ('{"prompt": "a", "seed": 7}', None, None),
        ('{"x": {"seed": 1}, "seed": 7}', '{"x": {"seed": 2}, "seed": 7}', None),
        ('{"x": {"seed": 1}, "seed": 7}', '{"x": {"seed": 1}, "seed": 9}', "9"),
        ('{"prompt":"a","seed":7}', '{"prompt":"a","seed":7}', "7"),  # compact: the same text
        ('{"prompt":"a","seed":7}', '{"prompt":"a","seed":8}', None),
        ('{"seed": "abc"}', '{"seed": "abc"}', "abc"),
        ('{"prompt": "a"}', '{"prompt": "a"}', ""),
        ('{"prompt": "a"}', '{"prompt": "b"}', None),
        (None, None, ""),
    ],
)
def test_twins_are_one_request_but_for_its_seeds_digits(
    first: str | None, other: str | None, seed: str | None
) -> None:
    """A row is a twin of another when its request is the same text but for the digits of a
    whole number where the seed is (or the same text); its seed's text, else None."""
    assert _Twins(report_row(first), ()).seed(report_row(other)) == seed


@pytest.mark.parametrize(
    "column", ["manifest", "campaign", "tags", "soul", "vars"], ids=lambda column: column
)
def test_twins_share_their_manifest_campaign_tags_soul_and_matrix_row(column: str) -> None:
    """A row with another manifest, campaign, tags, soul or matrix row is no twin."""
    request = '{"prompt": "a", "seed": 7}'
    twins = _Twins(report_row(request), ())
    assert twins.seed(report_row(request, **{column: '["x"]'})) is None
