"""The report in a real browser (headless Chromium, Debian's package): a run with downloaded,
failed, seed-twin, variant, soul and image-to-video jobs, reported and looked at the way a
reviewer would. A screenshot goes to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.mock import MockOptions
from runner.mock.testing import INSTANT
from tests.browser import Page, chromium, find_chromium
from tests.cli_support import World, make_world, runner_env
from tests.conftest import MockServerFactory

ARTIFACTS = Path(__file__).parent / "artifacts"
MANIFEST = """\
version: 1
limits: {concurrency: 4, requests_per_second: 100, poll_initial: 0.02, poll_max: 0.1}
budget:
  prices: [{match: {}, credits_per_second: 2}]
souls:
  ava: {name: ava_v1, images: [https://cdn.example.com/ava.jpg]}
defaults: {type: text-to-video, duration: 2, aspect_ratio: "9:16"}
campaigns:
  - name: twins
    tags: [nightly]
    prompt: "A lighthouse at dusk, waves breaking"
    seeds: [1, 2]
  - name: variants
    tags: [nightly]
    prompt: "A fox running through fresh snow"
    variants: 2
  - name: soulful
    soul: ava
    prompt: "Ava waves at the camera"
  - name: spin
    type: image-to-video
    prompt: "Slow turntable spin of the {thing}"
    image_url: "https://cdn.example.com/{thing}.jpg?sig=SECRET-SIG"
    matrix: {thing: [sneaker]}
  - name: doomed
    prompt: "A scene the provider refuses, take {n}"
    matrix: {n: [1, 2]}
"""
WORKED = ["twins", "variants", "soulful", "spin"]
VIDEOS = 6  # 2 twins + 2 variants + 1 soul + 1 image-to-video

# Resolves once every player has loaded its metadata or given up: the readyState of each.
READY_STATES = """
Promise.all(Array.from(document.querySelectorAll("video"), (v) =>
  v.readyState >= 1 ? v.readyState : new Promise((done) => {
    v.addEventListener("loadedmetadata", () => done(v.readyState));
    v.addEventListener("error", () => done(-1));
  })))
"""


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path, why = find_chromium()
    if path is None:
        pytest.skip(why)
    return path


@pytest.fixture
def page(chromium_path: str, tmp_path: Path) -> Iterator[Page]:
    with chromium(chromium_path, tmp_path / "profile") as browser:
        yield browser.new_page()


@pytest.fixture
def night(tmp_path: Path, mock_server_factory: MockServerFactory) -> World:
    """The manifest run: four campaigns downloaded, one failed at another provider."""
    w = make_world(tmp_path, mock_server_factory(INSTANT))
    w.manifest.write_text(MANIFEST)
    only = [flag for name in WORKED for flag in ("--only", name)]
    done = w.invoke("run", str(w.manifest), *only)
    assert done.exit_code == 0, done.output
    refusing = mock_server_factory(MockOptions(fail_rate=1.0, seed=5))
    done = w.invoke("run", str(w.manifest), "--only", "doomed", env=runner_env(refusing))
    assert done.exit_code == 1, done.output
    return w


def cards(page: Page, selector: str = "article.card") -> list[dict[str, Any]]:
    """Every card as the browser lays it out: campaign, status, badge, text, visibility."""
    value: list[dict[str, Any]] = page.evaluate(
        f"""Array.from(document.querySelectorAll({selector!r}), (card) => ({{
          campaign: card.dataset.campaign, status: card.dataset.status,
          seed: card.querySelector(".seed")?.textContent ?? null,
          text: card.innerText, visible: card.offsetParent !== null }}))"""
    )
    return value


def test_a_reviewer_can_tell_jobs_apart_and_filter_them(night: World, page: Page) -> None:
    """Videos load their metadata; seed and variant tell twins apart; soul, source image and
    credits show; errors read once; unticking 'failed' hides the failed cards."""
    out = night.tmp / "report" / "report.html"
    done = night.invoke("report", "-o", str(out))
    assert done.exit_code == 0, done.output
    html = out.read_text()
    assert "SECRET-SIG" not in html and "cdn.example.com" not in html
    page.open(out.as_uri())
    states = page.evaluate(READY_STATES)
    assert len(states) == VIDEOS and all(s >= 1 for s in states), states
    assert page.evaluate("Array.from(document.querySelectorAll('video'), v => v.duration)")

    shown = cards(page)
    by_campaign: dict[str, list[dict[str, Any]]] = {}
    for card in shown:
        by_campaign.setdefault(card["campaign"], []).append(card)
    assert [c["seed"] for c in by_campaign["twins"]] == ["seed 1", "seed 2"]
    variants = [c["seed"] for c in by_campaign["variants"]]
    assert variants[0].startswith("variant 0 · seed ") and variants[1].startswith("variant 1 · ")
    assert variants[0] != variants[1]
    (soul,) = by_campaign["soulful"]
    assert "soul ava" in soul["text"]
    (spin,) = by_campaign["spin"]
    assert "source image\nsneaker.jpg" in spin["text"]
    assert all("credits\n4" in c["text"] for c in shown if c["status"] == "downloaded")
    doomed = by_campaign["doomed"]
    assert [c["status"] for c in doomed] == ["failed", "failed"]
    assert all("generation failed: generation failed" not in c["text"] for c in doomed)
    assert all("generation failed" in c["text"] for c in doomed)
    assert all(c["visible"] for c in shown)
    header = page.evaluate("document.querySelector('header').innerText")
    assert "8 jobs" in header and "6 videos" in header and "24 charged" in header

    page.screenshot(ARTIFACTS / "report.png")
    page.evaluate("document.querySelector('input[name=status][value=failed]').click()")
    after = cards(page)
    assert [c["visible"] for c in after] == [c["status"] != "failed" for c in after]
    assert page.evaluate("document.querySelector('section[data-campaign=doomed]').hidden")
    assert page.evaluate("document.forms.filters.elements.shown.value") == "6 of 8 jobs shown"
    page.evaluate("document.forms.filters.elements.campaign.value = 'twins';"
                  "document.forms.filters.dispatchEvent(new Event('change'))")  # fmt: skip
    assert [c["campaign"] for c in cards(page) if c["visible"]] == ["twins", "twins"]
    page.screenshot(ARTIFACTS / "report-filtered.png")


def test_without_javascript_every_card_shows(night: World, page: Page) -> None:
    """With scripts off the page still works: every card shows, the filter form stays hidden."""
    out = night.tmp / "report.html"
    assert night.invoke("report", "-o", str(out)).exit_code == 0
    page.send("Emulation.setScriptExecutionDisabled", value=True)
    page.open(out.as_uri())
    assert page.evaluate("document.getElementById('filters').offsetParent") is None
    shown = cards(page)
    assert len(shown) == 8 and all(c["visible"] for c in shown)


def test_a_bundle_travels_and_a_lone_page_says_where_videos_went(
    night: World, page: Page
) -> None:
    """`report --bundle DIR` moved elsewhere still plays every video; the page copied alone
    says which video is missing instead of showing black players."""
    bundle = night.tmp / "bundle"
    done = night.invoke("report", "--bundle", str(bundle))
    assert done.exit_code == 0, done.output
    assert f"({VIDEOS} video files copied)" in done.stdout
    moved = night.tmp / "elsewhere" / "night"
    shutil.copytree(bundle, moved)
    shutil.rmtree(bundle)
    page.open((moved / "report.html").as_uri())
    assert all(s >= 1 for s in page.evaluate(READY_STATES))

    alone = night.tmp / "mail" / "report.html"
    alone.parent.mkdir()
    shutil.copy(moved / "report.html", alone)
    page.open(alone.as_uri())
    page.evaluate(READY_STATES)
    notes = page.evaluate(
        "Array.from(document.querySelectorAll('.novideo'), n => n.textContent)"
    )
    assert page.evaluate("document.querySelectorAll('video').length") == 0
    missing = [n for n in notes if n.startswith("video not found beside this page: videos/")]
    assert len(missing) == VIDEOS, notes
    assert all("runner report --bundle DIR" in n for n in missing)
