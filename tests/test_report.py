"""The HTML report against a real ledger: players for downloaded videos, escaping, no URLs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from runner.errors import ManifestError
from runner.jobs import expand
from runner.ledger import JobRow, JobStatus, Ledger, ReportRow, default_ledger_url, open_ledger
from runner.manifest import load_manifest
from runner.report import build_report, tidy_error

S = JobStatus
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SIGNED_URL = "https://cdn.example.com/v/1.mp4?token=SECRET-TOKEN"
SCRIPT_ERROR = "<script>alert(1)</script> nsfw"
# HTML elements that have no end tag.
VOID = {"meta", "br", "hr", "img", "input", "link", "source", "wbr", "col", "area", "base"}

MAIN_MANIFEST = """\
version: 1
output:
  dir: {out}
  filename: "{{campaign}}/{{subject}} #{{key}}.mp4"
defaults:
  type: text-to-video
  duration: 4
  resolution: 720p
  aspect_ratio: "9:16"
campaigns:
  - name: walk
    prompt: "<b>{{subject}}</b> walking"
    matrix:
      subject: [A chef, "<i>dancer</i> 100%?"]
  - name: spin
    prompt: "turntable of the {{subject}}"
    matrix:
      subject: [watch, shoe]
"""

OTHER_MANIFEST = """\
version: 1
defaults: {type: text-to-video, duration: 2}
campaigns:
  - name: other
    prompt: "a {subject}"
    matrix:
      subject: [cat]
"""


@dataclass
class Node:
    """An element of the parsed report."""

    tag: str
    attrs: dict[str, str | None]
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def walk(self) -> list[Node]:
        """This node and every node under it, in document order."""
        return [self, *(n for child in self.children for n in child.walk())]

    def all_text(self) -> str:
        """The text of this node and its descendants (character references decoded)."""
        return "".join(self.text) + "".join(child.all_text() for child in self.children)

    def find(self, tag: str) -> list[Node]:
        """Every descendant element with this tag."""
        return [n for n in self.walk()[1:] if n.tag == tag]


class TreeBuilder(HTMLParser):
    """Builds a tree of ``Node``s and fails on any end tag that does not close the open one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].text.append(data)


def parse(html: str) -> Node:
    """The report's element tree; asserts that every element is closed in order."""
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


@dataclass
class Setup:
    """A ledger with two downloaded jobs (files on disk), one failed, one queued."""

    tmp: Path
    state: Path
    manifest: Path
    out_dir: Path
    rows: dict[str, JobRow]  # by the job's matrix subject

    def file(self, subject: str) -> Path:
        """Where the video of the job with this subject is."""
        return self.out_dir / self.rows[subject].path


def walk_to(ledger: Ledger, key: str, to: JobStatus, **columns: Any) -> JobRow:
    """Move a pending job along the usual path to ``to`` (downloaded or failed)."""
    ledger.transition(key, S.SUBMITTING, detail="submit")
    if to is S.FAILED:
        return ledger.transition(key, S.FAILED, **columns)
    ledger.transition(key, S.QUEUED, generation_id=f"gen-{key[:6]}")
    if to is S.QUEUED:
        return ledger.transition(key, S.QUEUED)
    ledger.transition(key, S.COMPLETED, video_url=SIGNED_URL)
    return ledger.transition(key, S.DOWNLOADED, **columns)


def record(state: Path, manifest_file: Path) -> dict[str, JobRow]:
    """Record a manifest's plan; its pending rows by matrix subject."""
    manifest = load_manifest(manifest_file)
    with open_ledger(default_ledger_url(state)) as ledger:
        ledger.record_plan(str(manifest.path), expand(manifest))
        return {row.vars["subject"]: row for row in ledger.jobs(manifest=str(manifest.path))}


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    """The main manifest recorded and moved through statuses, videos written where they go."""
    out_dir = tmp_path / "my videos"
    manifest_file = tmp_path / "m.yaml"
    manifest_file.write_text(MAIN_MANIFEST.format(out=out_dir), encoding="utf-8")
    state = tmp_path / "state"
    rows = record(state, manifest_file)
    with open_ledger(default_ledger_url(state)) as ledger:
        for subject in ("A chef", "<i>dancer</i> 100%?"):
            file = out_dir / rows[subject].path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(b"\x00\x00\x00\x18ftypmp42" + subject.encode())
            rows[subject] = walk_to(
                ledger,
                rows[subject].key,
                S.DOWNLOADED,
                bytes=1234567,
                sha256="ab" * 32,
                location=str(file.resolve()),
            )
        rows["watch"] = walk_to(ledger, rows["watch"].key, S.FAILED, error=SCRIPT_ERROR)
        rows["shoe"] = walk_to(ledger, rows["shoe"].key, S.QUEUED)
    return Setup(tmp_path, state, manifest_file, out_dir, rows)


def cards(doc: Node) -> dict[str, Node]:
    """The report's job cards by job key (their <code class="key">)."""
    found: dict[str, Node] = {}
    for art in doc.find("article"):
        (key,) = [c for c in art.find("code") if c.attrs.get("class") == "key"]
        found[key.all_text()] = art
    return found


def test_writes_a_card_per_job_and_a_player_per_downloaded_video(setup: Setup) -> None:
    """Every job gets a card; downloaded ones a <video> whose relative src is their file."""
    out = setup.tmp / "reports" / "report.html"
    summary = build_report(setup.state, out_file=out, now=NOW)

    assert summary.path == out and out.is_file()
    assert summary.jobs == 4 and summary.videos == 2
    assert summary.counts == {"queued": 1, "downloaded": 2, "failed": 1}
    doc = parse(out.read_text(encoding="utf-8"))
    by_key = cards(doc)
    assert set(by_key) == {row.key for row in setup.rows.values()}
    assert len(doc.find("video")) == 2
    for subject in ("A chef", "<i>dancer</i> 100%?"):
        (video,) = by_key[setup.rows[subject].key].find("video")
        assert "controls" in video.attrs and video.attrs["preload"] == "metadata"
        src = video.attrs["src"]
        assert src and not src.startswith(("/", "file:")), src
        assert "#" not in src and "?" not in src and " " not in src  # all percent-encoded
        assert (out.parent / unquote(src)).resolve() == setup.file(subject).resolve()


def test_cards_show_request_file_and_generation(setup: Setup) -> None:
    """A downloaded card shows vars, duration/resolution/aspect ratio, bytes, sha prefix, id."""
    out = setup.tmp / "report.html"
    build_report(setup.state, out_file=out, now=NOW)
    doc = parse(out.read_text(encoding="utf-8"))
    chef = setup.rows["A chef"]
    text = cards(doc)[chef.key].all_text()
    for shown in ("downloaded", "A chef", "720p", "9:16", "4 s", "1,234,567", "ab" * 32):
        assert shown in text
    assert chef.generation_id and chef.generation_id in text
    # Hashes, ids and paths are tucked into a <details>, out of the reviewer's way.
    (details,) = cards(doc)[chef.key].find("details")
    for noise in ("ab" * 32, chef.generation_id, "1,234,567"):
        assert noise in details.all_text()
        assert noise not in text.replace(details.all_text(), "")
    assert "Generated 2024-05-01 12:00:00 UTC" in doc.all_text()
    sections = {s.find("h2")[0].all_text(): s for s in doc.find("section")}
    assert list(sections) == ["walk", "spin"]  # manifest order
    assert "downloaded 2" in sections["walk"].find("ul")[0].all_text()


def test_failed_and_unfinished_jobs_show_status_and_escaped_error(setup: Setup) -> None:
    """No player for jobs not downloaded; the error is shown as text, never as markup."""
    out = setup.tmp / "report.html"
    build_report(setup.state, out_file=out, now=NOW)
    html = out.read_text(encoding="utf-8")
    doc = parse(html)
    failed = cards(doc)[setup.rows["watch"].key]
    assert failed.find("video") == []
    assert SCRIPT_ERROR in failed.all_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; nsfw" in html
    assert html.lower().count("<script") == 1  # the page's own, see test_the_only_script...
    (script,) = doc.find("script")
    assert script.attrs == {}
    queued = cards(doc)[setup.rows["shoe"].key]
    assert queued.find("video") == [] and "queued" in queued.all_text()


def test_prompts_and_vars_are_escaped(setup: Setup) -> None:
    """A prompt with <b> and a var with <i> come out as text, not elements."""
    out = setup.tmp / "report.html"
    build_report(setup.state, out_file=out, now=NOW)
    html = out.read_text(encoding="utf-8")
    doc = parse(html)
    assert "&lt;b&gt;A chef&lt;/b&gt; walking" in html
    assert "<b>" not in html and "<i>" not in html
    assert not {"b", "i"} & {n.tag for n in doc.walk()}
    dancer = cards(doc)[setup.rows["<i>dancer</i> 100%?"].key].all_text()
    assert "<b><i>dancer</i> 100%?</b> walking" in dancer


def test_no_external_resources_and_no_provider_urls(setup: Setup) -> None:
    """Self-contained: no <link>, no external script, no http(s) anywhere, no video_url or
    its token."""
    out = setup.tmp / "report.html"
    build_report(setup.state, out_file=out, now=NOW)
    html = out.read_text(encoding="utf-8")
    doc = parse(html)
    tags = {n.tag for n in doc.walk()}
    assert not tags & {"link", "img", "iframe", "object", "embed"}
    assert all("src" not in s.attrs for s in doc.find("script"))
    assert "style" in tags  # the CSS is inline
    for node in doc.walk():
        for name, value in node.attrs.items():
            if name in ("src", "href"):
                assert value and "://" not in value, value
    assert "http://" not in html and "https://" not in html
    assert "SECRET-TOKEN" not in html and "cdn.example.com" not in html


def test_signed_urls_quoted_in_errors_lose_their_query(tmp_path: Path) -> None:
    """An error text quoting a provider URL keeps the URL's path but drops its query string."""
    manifest_file = tmp_path / "o.yaml"
    manifest_file.write_text(OTHER_MANIFEST, encoding="utf-8")
    state = tmp_path / "state"
    rows = record(state, manifest_file)
    with open_ledger(default_ledger_url(state)) as ledger:
        walk_to(ledger, rows["cat"].key, S.FAILED, error=f"moderation: see {SIGNED_URL} now")
    out = tmp_path / "report.html"
    build_report(state, out_file=out, now=NOW)
    html = out.read_text(encoding="utf-8")
    assert "SECRET-TOKEN" not in html and "token=" not in html
    assert "https://cdn.example.com/v/1.mp4?…" in html


def test_manifest_filter_keeps_only_that_manifests_jobs(setup: Setup) -> None:
    """With a manifest, only its jobs appear; without, every manifest's jobs do."""
    other = setup.tmp / "elsewhere" / "o.yaml"
    other.parent.mkdir()
    other.write_text(OTHER_MANIFEST, encoding="utf-8")
    other_key = record(setup.state, other)["cat"].key

    only = setup.tmp / "only.html"
    summary = build_report(setup.state, setup.manifest, out_file=only, now=NOW)
    assert summary.jobs == 4 and summary.videos == 2
    keys = set(cards(parse(only.read_text(encoding="utf-8"))))
    assert keys == {row.key for row in setup.rows.values()}

    both = setup.tmp / "both.html"
    summary = build_report(setup.state, out_file=both, now=NOW)
    assert summary.jobs == 5 and summary.counts["pending"] == 1
    doc = parse(both.read_text(encoding="utf-8"))
    assert other_key in cards(doc)
    headings = [h.all_text() for h in doc.find("h2")]
    assert any("other" in h and str(other.resolve()) in h for h in headings)

    mine = setup.tmp / "other.html"
    summary = build_report(setup.state, str(other), out_file=mine, now=NOW)
    assert summary.jobs == 1 and set(cards(parse(mine.read_text(encoding="utf-8")))) == {other_key}


def test_unknown_manifest_is_a_manifest_error(setup: Setup) -> None:
    """A manifest argument that does not load raises ManifestError and writes nothing."""
    out = setup.tmp / "report.html"
    with pytest.raises(ManifestError):
        build_report(setup.state, setup.tmp / "missing.yaml", out_file=out, now=NOW)
    assert not out.exists()


def test_videos_are_found_where_the_ledger_says_after_the_manifest_is_gone(
    setup: Setup,
) -> None:
    """The report reads each video's recorded location: deleting (or moving) the manifest
    changes nothing; a video moved away from its location shows as missing, with where it
    was expected."""
    setup.manifest.unlink()
    chef = setup.rows["A chef"]
    out = setup.tmp / "report.html"
    summary = build_report(setup.state, out_file=out, now=NOW)
    assert summary.videos == 2
    by_key = cards(parse(out.read_text(encoding="utf-8")))
    (video,) = by_key[chef.key].find("video")
    assert (out.parent / unquote(video.attrs["src"] or "")).resolve() == setup.file("A chef")
    setup.file("A chef").rename(setup.tmp / "elsewhere.mp4")
    summary = build_report(setup.state, out_file=out, now=NOW)
    assert summary.videos == 1
    card = cards(parse(out.read_text(encoding="utf-8")))[chef.key]
    assert card.find("video") == [] and "file missing" in card.all_text()
    assert str(setup.file("A chef")) in card.all_text()


def test_no_ledger_writes_a_report_with_no_jobs_and_creates_no_ledger(tmp_path: Path) -> None:
    """Without a ledger the report says there are no jobs; no ledger.db appears."""
    state = tmp_path / "state"
    out = state / "report.html"
    summary = build_report(state, out_file=out, now=NOW)
    assert summary.jobs == 0 and summary.counts == {} and summary.videos == 0
    doc = parse(out.read_text(encoding="utf-8"))
    assert "No jobs in the ledger." in doc.all_text()
    assert doc.find("article") == [] and doc.find("video") == []
    assert sorted(p.name for p in state.iterdir()) == ["report.html"]


def test_the_report_is_replaced_atomically(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewrite leaves no temp file; a failed rewrite keeps the old report and no temp file."""
    out = setup.tmp / "reports" / "report.html"
    build_report(setup.state, out_file=out, now=NOW)
    build_report(setup.state, out_file=out, now=datetime(2024, 6, 1, tzinfo=UTC))
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    before = out.read_text(encoding="utf-8")
    assert "2024-06-01" in before

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        build_report(setup.state, out_file=out, now=NOW)
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    assert out.read_text(encoding="utf-8") == before


def test_reading_leaves_the_ledger_unchanged(setup: Setup) -> None:
    """The report only reads: the ledger's jobs and events are the same afterwards."""
    with open_ledger(default_ledger_url(setup.state)) as ledger:
        jobs_before = ledger.jobs()
        events_before = [ledger.events(row.key) for row in jobs_before]
    build_report(setup.state, out_file=setup.tmp / "report.html", now=NOW)
    with open_ledger(default_ledger_url(setup.state)) as ledger:
        assert ledger.jobs() == jobs_before
        assert [ledger.events(row.key) for row in jobs_before] == events_before


def test_report_command_writes_into_the_state_dir_by_default(setup: Setup) -> None:
    """`runner report` writes <state>/report.html; `-o` and a manifest argument are honoured."""
    from click.testing import CliRunner

    from runner.cli import cli

    runner = CliRunner()
    done = runner.invoke(cli, ["report", "--state", str(setup.state)])
    assert done.exit_code == 0, done.output
    assert (setup.state / "report.html").is_file()
    assert "4 jobs, 2 videos" in done.output
    elsewhere = setup.tmp / "out" / "r.html"
    done = runner.invoke(
        cli, ["report", str(setup.manifest), "-o", str(elsewhere), "--state", str(setup.state)]
    )
    assert done.exit_code == 0, done.output
    assert len(cards(parse(elsewhere.read_text()))) == 4
    missing = runner.invoke(cli, ["report", "nope.yaml", "--state", str(setup.state)])
    assert missing.exit_code == 2
    assert "nope.yaml" in missing.output


# --- what tells jobs apart, what they cost, where to look ---------------------------------

TWINS_MANIFEST = """\
version: 1
budget:
  prices: [{match: {}, credits_per_second: 3}]
souls:
  ava: {name: ava_v1, images: [https://cdn.example.com/ava.jpg]}
defaults: {type: text-to-video, duration: 2}
campaigns:
  - name: twins
    prompt: a lighthouse
    seeds: [7, 8]
  - name: variants
    tags: [weekly]
    prompt: a fox
    variants: 2
  - name: soulful
    soul: ava
    type: image-to-video
    prompt: ava waves
    image_url: "https://cdn.example.com/looks/look1.jpg?X-Signature=SECRET"
"""


def twins_report(tmp_path: Path, **options: Any) -> tuple[Node, dict[str, Node], str]:
    """The twins manifest recorded (twins downloaded without files, one variant failed after
    submit, one not submitted); its report, its cards by key, and the HTML."""
    manifest_file = tmp_path / "t.yaml"
    manifest_file.write_text(TWINS_MANIFEST, encoding="utf-8")
    state = tmp_path / "state"
    manifest = load_manifest(manifest_file)
    with open_ledger(default_ledger_url(state)) as ledger:
        ledger.record_plan(str(manifest.path), expand(manifest))
        rows = ledger.jobs()
        for row in rows[:2]:
            walk_to(ledger, row.key, S.DOWNLOADED, location=str(tmp_path / f"{row.key}.mp4"))
        ledger.transition(rows[2].key, S.SUBMITTING)
        ledger.transition(rows[2].key, S.QUEUED, generation_id="gen-x")
        ledger.transition(
            rows[2].key, S.FAILED, error="generation failed: generation failed: failed"
        )
    out = tmp_path / "report.html"
    build_report(state, out_file=out, now=NOW, **options)
    html = out.read_text(encoding="utf-8")
    doc = parse(html)
    return doc, cards(doc), html


def badge(card: Node) -> str:
    (node,) = [n for n in card.walk() if n.attrs.get("class") == "seed"]
    return node.all_text()


def fields(card: Node) -> dict[str, str]:
    """The card's first definition list (outside the ids' <details>), name → value."""
    dl = card.find("dl")[0]
    names = [n.all_text() for n in dl.find("dt")]
    return dict(zip(names, [n.all_text() for n in dl.find("dd")], strict=True))


def test_seed_and_variant_tell_twins_apart(tmp_path: Path) -> None:
    """Seed twins show their seed, variants their index and derived seed: no two alike."""
    doc, _, _ = twins_report(tmp_path)
    sections = {s.attrs["data-campaign"]: s for s in doc.find("section")}
    twins = [badge(c) for c in sections["twins"].find("article")]
    assert twins == ["seed 7", "seed 8"]
    variants = [badge(c) for c in sections["variants"].find("article")]
    assert [v.split(" · ")[0] for v in variants] == ["variant 0", "variant 1"]
    assert len(set(variants)) == 2 and all(" · seed " in v for v in variants)


def test_cards_show_soul_source_image_duration_aspect_and_credits(tmp_path: Path) -> None:
    """The soul, the source image by file name only, duration and credits per card."""
    doc, _, html = twins_report(tmp_path)
    (card,) = [c for c in doc.find("article") if c.attrs["data-campaign"] == "soulful"]
    shown = fields(card)
    assert shown["soul"] == "ava" and shown["source image"] == "look1.jpg"
    assert shown["duration"] == "2 s" and shown["credits"] == "6"
    assert "soul ava" in card.all_text()
    assert "SECRET" not in html and "cdn.example.com" not in html


def test_errors_read_once_and_refunds_are_said(tmp_path: Path) -> None:
    """'generation failed: generation failed' reads once; a failed generation's credits are
    refunded, on its card and in the header."""
    import re
    from html import unescape

    doc, _, html = twins_report(tmp_path)
    (failed,) = [c for c in doc.find("article") if c.attrs["data-status"] == "failed"]
    (error,) = [n for n in failed.walk() if n.attrs.get("class") == "error"]
    assert error.all_text() == "generation failed: failed"
    assert fields(failed)["credits"] == "6 (refunded)"
    header = html.split("<header>")[1].split("</header>")[0]
    text = " ".join(unescape(re.sub(r"<[^>]+>", "", header)).split())
    assert "Credits (estimated): 12 charged · 6 refunded" in text
    assert "12 not submitted yet" in text  # the variant and the soul job still pending
    assert "Generated 2024-05-01 12:00:00 UTC · jobs recorded 20" in text


def test_tidy_error() -> None:
    """Repeated phrases once; signed URLs lose their query; other errors as they were."""
    assert tidy_error("generation failed: generation failed") == "generation failed"
    assert tidy_error("submit refused: Bad Request: bad request") == "submit refused: Bad Request"
    assert tidy_error("nsfw: content flagged") == "nsfw: content flagged"
    assert tidy_error("see https://x.example/v.mp4?sig=1") == "see https://x.example/v.mp4?…"
    assert tidy_error(None) is None and tidy_error("") is None


def test_contents_status_bars_and_filters(tmp_path: Path) -> None:
    """A table of contents links every campaign; the header and each campaign have a status
    bar; the filter form lists campaigns, tags and statuses and is hidden until the script
    shows it (without JavaScript every card shows)."""
    doc, _, _ = twins_report(tmp_path)
    (nav,) = doc.find("nav")
    links = [a.attrs["href"] for a in nav.find("a")]
    ids = [f"#{s.attrs['id']}" for s in doc.find("section")]
    assert links == ids and len(ids) == 3
    bars = [n for n in doc.walk() if n.attrs.get("class") == "bar"]
    assert len(bars) == 1 + 3 + 3  # header, table of contents, sections
    segments = [(s.attrs["class"], s.attrs["style"]) for s in bars[0].find("span")]
    assert segments == [
        ("s-pending", "flex-grow: 2"),
        ("s-downloaded", "flex-grow: 2"),
        ("s-failed", "flex-grow: 1"),
    ]
    (form,) = doc.find("form")
    assert "hidden" in form.attrs
    options = {
        s.attrs["name"]: [o.attrs["value"] for o in s.find("option")] for s in form.find("select")
    }
    assert options == {"campaign": ["", "soulful", "twins", "variants"], "tag": ["", "weekly"]}
    boxes = [i.attrs["value"] for i in form.find("input")]
    assert boxes == ["pending", "downloaded", "failed"]


def test_the_only_script_is_inline_and_allowed_by_its_hash(tmp_path: Path) -> None:
    """The page's Content-Security-Policy allows exactly its own script, by sha256."""
    import base64
    import hashlib

    doc, _, _ = twins_report(tmp_path)
    (script,) = doc.find("script")
    digest = base64.b64encode(hashlib.sha256(script.all_text().encode()).digest()).decode()
    (csp,) = [m for m in doc.find("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert f"script-src 'sha256-{digest}';" in (csp.attrs["content"] or "")
    assert "object-src 'none'" in (csp.attrs["content"] or "")


def test_bundle_copies_videos_beside_the_page(setup: Setup) -> None:
    """bundle=True copies each local video into videos/ beside the page and points the
    players there; a second bundle copies nothing new."""
    out = setup.tmp / "bundle" / "report.html"
    summary = build_report(setup.state, out_file=out, now=NOW, bundle=True)
    assert summary.videos == 2 and summary.copied == 2
    doc = parse(out.read_text(encoding="utf-8"))
    for subject in ("A chef", "<i>dancer</i> 100%?"):
        (video,) = cards(doc)[setup.rows[subject].key].find("video")
        src = unquote(video.attrs["src"] or "")
        assert src == f"videos/{setup.rows[subject].path}"
        assert (out.parent / src).read_bytes() == setup.file(subject).read_bytes()
    again = build_report(setup.state, out_file=out, now=NOW, bundle=True)
    assert again.copied == 0


def test_bundle_and_output_are_exclusive_on_the_command_line(setup: Setup) -> None:
    """`report --bundle DIR` writes DIR/report.html; with -o as well it is a usage error."""
    from click.testing import CliRunner

    from runner.cli import cli

    runner = CliRunner()
    bundle = str(setup.tmp / "b")
    done = runner.invoke(cli, ["report", "--bundle", bundle, "--state", str(setup.state)])
    assert done.exit_code == 0, done.output
    assert (setup.tmp / "b" / "report.html").is_file()
    assert "bundle: " in done.stdout and "(2 video files copied)" in done.stdout
    both = runner.invoke(
        cli, ["report", "--bundle", "b", "-o", "x.html", "--state", str(setup.state)]
    )
    assert both.exit_code == 2 and "not both" in both.stderr


def test_a_players_path_is_relative_to_the_page_however_the_ledger_spells_it(
    tmp_path: Path,
) -> None:
    """A downloaded video's player points at it relative to the page's folder, whether the
    ledger's location has doubled separators, dots, or lies in the page's folder, above it or
    at the root (split by hand on POSIX: the same answer as ``os.path.split``)."""
    from datetime import timedelta

    from runner.report.links import Files, link

    page = tmp_path / "site" / "report"
    videos = tmp_path / "videos" / "c"
    videos.mkdir(parents=True)
    page.mkdir(parents=True)
    (videos / "a b.mp4").write_bytes(b"")
    (page / "here.mp4").write_bytes(b"")
    row = ReportRow(
        **{name: None for name in ReportRow._fields}
        | {"key": "k", "status": S.DOWNLOADED, "path": "c/a b.mp4", "credits": 0.0}
    )
    spellings = {
        str(videos / "a b.mp4"): ("../../videos/c/a b.mp4", "../../videos/c/a%20b.mp4"),
        f"{tmp_path}//videos/./c//a b.mp4": ("../../videos/c/a b.mp4", "../../videos/c/a%20b.mp4"),
        str(page / "here.mp4"): ("here.mp4", "here.mp4"),
        f"{page}/../report/here.mp4": ("here.mp4", "here.mp4"),
    }
    for files in (None, Files()):  # a stat per file, or a listing per folder
        for location, (file, url) in spellings.items():
            placed = link(
                row._replace(location=location),
                str(page),
                timedelta(hours=1),
                None,
                files,
            )
            assert placed == (url, file.replace("/", os.sep), None), location
        root = row._replace(location="/")  # a folder: not a file, so no player
        assert link(root, str(page), timedelta(hours=1), None, files) == (None, "", "/")


def test_files_answers_as_isfile_with_a_listing_per_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Files.is_file`` is ``os.path.isfile`` (links followed, folders and dangling links
    not files, a file made after its folder was listed found), one listing per folder."""
    from runner.report import links

    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "to-a.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (tmp_path / "to-sub").symlink_to(tmp_path / "sub")
    listed: list[str] = []
    real = links._listed
    monkeypatch.setattr(links, "_listed", lambda folder: listed.append(folder) or real(folder))
    files = links.Files()
    names = ["a.mp4", "sub", "to-a.mp4", "dangling.mp4", "to-sub", "gone.mp4", "sub/x", ""]
    for name in names:
        path = os.path.join(tmp_path, name)
        assert files.is_file(path) == os.path.isfile(path), name
    assert listed == [str(tmp_path), str(tmp_path / "sub")]  # "" splits to the folder itself
    (tmp_path / "late.mp4").write_bytes(b"")
    assert files.is_file(str(tmp_path / "late.mp4"))
    monkeypatch.chdir(tmp_path)
    assert files.is_file("a.mp4") and not files.is_file("sub")  # a relative path: "." listed
    assert listed[-1] == os.curdir
    assert files.is_file(str(tmp_path / "a.mp4")) and len(listed) == 3  # listed once
    few = links.Files()
    few.KEPT = 1  # more names than that: a stat per file, the folder listed once
    for name in [*names, *names]:
        path = os.path.join(tmp_path, name)
        assert few.is_file(path) == os.path.isfile(path), name
    assert listed[3:] == [str(tmp_path), str(tmp_path / "sub")]
