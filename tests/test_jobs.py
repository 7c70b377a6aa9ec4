"""Expansion: GitHub matrix semantics, seeds, variants, CSV rows, templates, keys, credits, plan."""

from __future__ import annotations

import hashlib
import json
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner.errors import ManifestError
from runner.jobs import Job, expand, job_key, number, plan_document, variant_seed
from runner.manifest import Manifest, load_manifest, parse_manifest


def load(tmp_path: Path, text: str) -> Manifest:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_manifest(path)


def jobs_of(tmp_path: Path, text: str) -> list[Job]:
    return expand(load(tmp_path, text))


def matrix_rows(tmp_path: Path, matrix: str) -> list[dict[str, Any]]:
    """The rows of a one-campaign manifest whose matrix is ``matrix`` (YAML, flow or block)."""
    text = "version: 1\ncampaigns:\n  - name: c\n    prompt: p\n    matrix:\n"
    text += textwrap.indent(textwrap.dedent(matrix), "      ")
    return [job.vars for job in jobs_of(tmp_path, text)]


# --- matrix semantics --------------------------------------------------------------------------


def test_cartesian_product_first_key_outermost(tmp_path: Path) -> None:
    """The product runs in declaration order, the first key varying slowest."""
    rows = matrix_rows(tmp_path, "a: [1, 2]\nb: [x, y, z]\n")
    assert rows == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 2, "b": "z"},
    ]


def test_exclude_is_a_partial_match(tmp_path: Path) -> None:
    """An exclude entry drops every combination matching all of its keys."""
    rows = matrix_rows(
        tmp_path,
        """
        os: [linux, mac, win]
        py: ["3.11", "3.12"]
        exclude:
          - {os: mac}
          - {os: win, py: "3.12"}
        """,
    )
    assert rows == [
        {"os": "linux", "py": "3.11"},
        {"os": "linux", "py": "3.12"},
        {"os": "win", "py": "3.11"},
    ]


def test_include_follows_github_documentation_example(tmp_path: Path) -> None:
    """GitHub's own example: extend where no original value is overwritten, else add a row.

    The pink include overwrites the color an earlier include added; {fruit: banana, animal: cat}
    does not extend the {fruit: banana} row, since that row was not an original combination.
    """
    rows = matrix_rows(
        tmp_path,
        """
        fruit: [apple, pear]
        animal: [cat, dog]
        include:
          - color: green
          - color: pink
            animal: cat
          - fruit: apple
            shape: circle
          - fruit: banana
          - fruit: banana
            animal: cat
        """,
    )
    assert rows == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_include_never_overwrites_original_values(tmp_path: Path) -> None:
    """An include that would change an original value of every row becomes its own row."""
    rows = matrix_rows(
        tmp_path,
        """
        size: [s, m]
        include:
          - {size: s, fit: slim}
          - {size: xl, fit: loose}
        exclude:
          - {size: m}
        """,
    )
    assert rows == [{"size": "s", "fit": "slim"}, {"size": "xl", "fit": "loose"}]


def test_include_runs_after_exclude(tmp_path: Path) -> None:
    """Exclude only sees the product; an include may bring an excluded combination back."""
    rows = matrix_rows(
        tmp_path,
        """
        a: [1, 2]
        exclude: [{a: 2}]
        include: [{a: 2}]
        """,
    )
    assert rows == [{"a": 1}, {"a": 2}]


def test_include_only_matrix_is_a_list_of_rows(tmp_path: Path) -> None:
    """Without plain keys every include entry is one row, as written."""
    rows = matrix_rows(
        tmp_path,
        """
        include:
          - {subject: A chef, place: a kitchen}
          - {subject: A dancer}
          - {}
        """,
    )
    assert rows == [{"subject": "A chef", "place": "a kitchen"}, {"subject": "A dancer"}, {}]


def test_matrix_values_compare_by_type(tmp_path: Path) -> None:
    """`1` and `true` are different values for exclude and include (as in the job key)."""
    rows = matrix_rows(tmp_path, "flag: [1, true]\nexclude: [{flag: true}]\n")
    assert rows == [{"flag": 1}]


def test_campaign_without_matrix_is_one_job(tmp_path: Path) -> None:
    """No matrix and no rows: one job with an empty row."""
    jobs = jobs_of(tmp_path, "version: 1\ncampaigns: [{name: c, prompt: hello}]\n")
    assert [(j.vars, j.request) for j in jobs] == [({}, {"prompt": "hello"})]


# --- request layering, seeds, variants, CSV ---------------------------------------------------


def test_precedence_defaults_campaign_row_and_null_unsets(tmp_path: Path) -> None:
    """defaults < campaign < matrix row; a null in a higher layer removes the field."""
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        defaults: {type: text-to-video, duration: 8, resolution: 1080p, seed: 3}
        campaigns:
          - name: c
            prompt: p
            duration: 5
            seed: null
            matrix:
              resolution: [720p]
              include:
                - {duration: 10, mood: calm}
        """,
    )
    assert [j.request for j in jobs] == [
        {"type": "text-to-video", "prompt": "p", "duration": 10, "resolution": "720p"}
    ]
    assert jobs[0].vars == {"resolution": "720p", "duration": 10, "mood": "calm"}


def test_seeds_multiply_every_row(tmp_path: Path) -> None:
    """Each row once per seed, row-major; the seed goes into the request, not the row."""
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        campaigns:
          - name: c
            prompt: "{a}"
            matrix: {a: [x, y]}
            seeds: [5, 6]
        """,
    )
    assert [(j.vars, j.request, j.variant) for j in jobs] == [
        ({"a": "x"}, {"prompt": "x", "seed": 5}, None),
        ({"a": "x"}, {"prompt": "x", "seed": 6}, None),
        ({"a": "y"}, {"prompt": "y", "seed": 5}, None),
        ({"a": "y"}, {"prompt": "y", "seed": 6}, None),
    ]
    assert len({j.key for j in jobs}) == 4


def test_variants_make_distinct_jobs_with_derived_seeds(tmp_path: Path) -> None:
    """`variants: N` makes N jobs per row; seeds are derived as the jobs module documents."""
    text = """
        version: 1
        defaults: {seed: 99}
        campaigns:
          - name: c
            prompt: "{a}"
            matrix: {a: [x, y]}
            variants: 3
        """
    jobs = jobs_of(tmp_path, text)
    assert [(j.vars, j.variant) for j in jobs] == [
        ({"a": "x"}, 0),
        ({"a": "x"}, 1),
        ({"a": "x"}, 2),
        ({"a": "y"}, 0),
        ({"a": "y"}, 1),
        ({"a": "y"}, 2),
    ]
    for job in jobs:
        material = ["seed", "c", job.vars, {"prompt": job.vars["a"]}, job.variant]
        digest = hashlib.sha256(
            json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        assert job.request["seed"] == int(digest[:8], 16) & 0x7FFFFFFF
        assert job.request["seed"] == variant_seed(
            "c", job.vars, {"prompt": job.vars["a"]}, job.variant or 0
        )
    assert len({j.request["seed"] for j in jobs}) == 6
    assert [j.key for j in jobs_of(tmp_path, text)] == [j.key for j in jobs]  # stable


def test_csv_rows_follow_the_matrix_rows(tmp_path: Path) -> None:
    """Each CSV row is one more row; request-field columns are typed, empty cells fall back."""
    (tmp_path / "shots.csv").write_text(
        "subject,duration,camera_fixed\nA monk,8,true\nA chef,,false\n", encoding="utf-8"
    )
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        defaults: {duration: 5}
        campaigns:
          - name: c
            prompt: "{subject}"
            matrix:
              subject: [A dancer]
            rows: shots.csv
        """,
    )
    assert [(j.vars, j.request) for j in jobs] == [
        ({"subject": "A dancer"}, {"prompt": "A dancer", "duration": 5}),
        (
            {"subject": "A monk", "duration": 8, "camera_fixed": True},
            {"prompt": "A monk", "duration": 8, "camera_fixed": True},
        ),
        (
            {"subject": "A chef", "camera_fixed": False},
            {"prompt": "A chef", "duration": 5, "camera_fixed": False},
        ),
    ]


def test_csv_only_campaign(tmp_path: Path) -> None:
    """A campaign with rows and no matrix has exactly the CSV's rows (blank lines skipped)."""
    (tmp_path / "rows.csv").write_text("place\na park\n\na beach\n", encoding="utf-8")
    jobs = jobs_of(
        tmp_path,
        "version: 1\ncampaigns: [{name: c, prompt: 'At {place}', rows: rows.csv}]\n",
    )
    assert [j.request["prompt"] for j in jobs] == ["At a park", "At a beach"]


# --- templates and paths -----------------------------------------------------------------------


def test_templates_with_escapes_vars_row_and_campaign(tmp_path: Path) -> None:
    """`{{`/`}}` are literal braces; vars, row values and `campaign` fill placeholders."""
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        vars: {brand: Acme, n: 3}
        campaigns:
          - name: launch
            prompt: "{{literal}} {brand} x{n} for {campaign}: {subject} }}{{"
            image_url: "https://cdn.example.com/{brand}/{subject}.jpg"
            type: image-to-video
            matrix:
              subject: [shoe]
              brand: [Zeta]
        """,
    )
    assert jobs[0].request["prompt"] == "{literal} Zeta x3 for launch: shoe }{"
    assert jobs[0].request["image_url"] == "https://cdn.example.com/Zeta/shoe.jpg"


def test_values_are_not_templates_themselves(tmp_path: Path) -> None:
    """A brace in a substituted value stays as it is; it is not expanded again."""
    jobs = jobs_of(
        tmp_path,
        "version: 1\nvars: {x: '{y}'}\ncampaigns: [{name: c, prompt: '<{x}>'}]\n",
    )
    assert jobs[0].request["prompt"] == "<{y}>"


def test_output_filename_template_and_sanitizing(tmp_path: Path) -> None:
    """Each segment is sanitized: separators, controls and dot-only names cannot escape."""
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        output:
          filename: "{campaign}/{who}/{seed}-{key}.mp4"
        campaigns:
          - name: c
            prompt: p
            matrix:
              who: ["../../etc/passwd", "..", "a\\x01b\\nc", "/abs", "ok name"]
            seeds: [1]
        """,
    )
    folders = [j.path.split("/")[1] for j in jobs]
    assert folders == [".._.._etc_passwd", "_", "a_b_c", "_abs", "ok name"]
    out = (tmp_path / "videos").resolve()
    for job in jobs:
        assert job.path == f"c/{job.path.split('/')[1]}/1-{job.key}.mp4"
        assert (out / job.path).resolve().is_relative_to(out)


def test_null_seed_and_variant_render_empty_in_filenames(tmp_path: Path) -> None:
    """SPEC v2 §3: one filename serves every campaign; a job without a seed or variant gets
    an empty string there."""
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        output: {filename: "{campaign}/{key}-s{seed}-v{variant}.mp4"}
        campaigns:
          - {name: plain, prompt: p}
          - {name: seeded, prompt: p, seeds: [7]}
          - {name: varied, prompt: p, variants: 2}
        """,
    )
    names = [j.path.split("/")[1].removeprefix(j.key) for j in jobs]
    assert names[:2] == ["-s-v.mp4", "-s7-v.mp4"]
    assert names[2].endswith("-v0.mp4") and names[3].endswith("-v1.mp4")


def test_output_filename_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    """A filename placeholder no job can fill is located at output.filename."""
    with pytest.raises(ManifestError) as info:
        jobs_of(
            tmp_path,
            "version: 1\noutput: {filename: '{campaign}/{shot}.mp4'}\n"
            "campaigns: [{name: c, prompt: p}]\n",
        )
    assert info.value.line == 2
    assert info.value.field == "output.filename"
    assert "unknown placeholder {shot}" in info.value.message


def test_two_jobs_on_one_path_is_an_error(tmp_path: Path) -> None:
    """A filename that does not tell jobs apart would overwrite videos."""
    with pytest.raises(ManifestError, match=r"would both be written to 'c\.mp4'"):
        jobs_of(
            tmp_path,
            "version: 1\noutput: {filename: '{campaign}.mp4'}\n"
            "campaigns: [{name: c, prompt: p, seeds: [1, 2]}]\n",
        )


def test_the_same_job_twice_is_an_error(tmp_path: Path) -> None:
    """Duplicate matrix values would make two jobs with one key."""
    with pytest.raises(ManifestError, match="makes the same job twice") as info:
        jobs_of(
            tmp_path,
            "version: 1\ncampaigns:\n  - name: c\n    prompt: '{a}'\n    matrix: {a: [x, x]}\n",
        )
    assert info.value.line == 5


def test_a_job_made_twice_is_told_before_a_later_row_fails(tmp_path: Path) -> None:
    """Jobs are checked in manifest order: a job made twice by an earlier row (or written
    where an earlier one is) is the error, not a later row's problem; a later row's problem
    is the error when nothing before it is made twice."""
    base = "version: 1\noutput: {filename: '%s'}\ncampaigns:\n  - {name: c, prompt: '{a}', "
    later = "\n  - {name: d, prompt: '{nope}'}\n"
    with pytest.raises(ManifestError, match="makes the same job twice") as info:
        jobs_of(tmp_path, base % "{key}" + "matrix: {a: [x, x]}}" + later)
    assert info.value.line == 4
    with pytest.raises(ManifestError, match="would both be written to"):
        jobs_of(tmp_path, base % "{campaign}" + "matrix: {a: [x, y]}}" + later)
    with pytest.raises(ManifestError, match="unknown placeholder"):
        jobs_of(tmp_path, base % "{key}" + "matrix: {a: [x, y]}}" + later)


def test_unknown_placeholder_in_a_matrix_value_points_at_the_value(tmp_path: Path) -> None:
    """A prompt set by the matrix is checked where it was written."""
    with pytest.raises(ManifestError) as info:
        jobs_of(
            tmp_path,
            """
            version: 1
            campaigns:
              - name: c
                matrix:
                  prompt: ["fine", "about {nothing}"]
            """,
        )
    assert (info.value.line, info.value.field) == (6, "campaigns[0].matrix.prompt[1]")


# --- keys and credits --------------------------------------------------------------------------


def test_key_is_sha256_of_canonical_json(tmp_path: Path) -> None:
    """Key = first 16 hex of sha256 over [campaign, row, request, variant], compact and sorted."""
    jobs = jobs_of(
        tmp_path, "version: 1\ncampaigns: [{name: c, prompt: '{a}', matrix: {a: [é]}}]\n"
    )
    material = ["c", {"a": "é"}, {"prompt": "é"}, None]
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert jobs[0].key == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert jobs[0].key == job_key("c", {"a": "é"}, {"prompt": "é"}, None)


def test_seeded_jobs_are_what_the_plain_definitions_make(tmp_path: Path) -> None:
    """A row's seeded jobs are put together from parts encoded once per row (request, key
    text, path): each is the same as the whole definition gives, keys included, whatever the
    request's fields sort before or after ``seed``, with a soul and unusual values too."""
    souls = "souls:\n  s: {name: s, images: ['https://x.example/a.jpg']}\n"
    jobs = jobs_of(
        tmp_path,
        f"""version: 1
{souls}defaults: {{type: text-to-video, duration: 5, resolution: 1080p, aspect_ratio: '16:9'}}
output: {{filename: "{{campaign}}/{{a}}/x-{{seed}}-{{key}}.mp4"}}
campaigns:
  - {{name: c, prompt: "é {{a}} \\"q\\"", matrix: {{a: [x, 2, 1.5, true]}}, seeds: [0, 7, 9999]}}
  - {{name: d, prompt: "{{a}}", soul: s, matrix: {{a: [z]}}, seeds: [3]}}
""",
    )
    assert len(jobs) == 13
    for job in jobs:
        expected = job_key(job.campaign, job.vars, job.request, job.variant, job.soul)
        assert job.key == expected
        assert job.request["seed"] == int(job.path.split("-")[1])
        assert job == Job(**{name: getattr(job, name) for name in Job.__dataclass_fields__})
    assert jobs[0].path == f"c/x/x-0-{jobs[0].key}.mp4"


def test_soul_is_part_of_the_key(tmp_path: Path) -> None:
    """Changing a campaign's soul changes its videos, so it changes the keys."""
    souls = (
        "souls:\n  a: {name: a, images: ['https://x.example/a.jpg']}\n"
        "  b: {name: b, images: ['https://x.example/b.jpg']}\n"
    )
    with_a = jobs_of(tmp_path, f"version: 1\n{souls}campaigns: [{{name: c, prompt: p, soul: a}}]\n")
    with_b = jobs_of(tmp_path, f"version: 1\n{souls}campaigns: [{{name: c, prompt: p, soul: b}}]\n")
    without = jobs_of(tmp_path, "version: 1\ncampaigns: [{name: c, prompt: p}]\n")
    assert len({with_a[0].key, with_b[0].key, without[0].key}) == 3
    assert (with_a[0].soul, with_b[0].soul, without[0].soul) == ("a", "b", None)


def test_credits_first_matching_rule(tmp_path: Path) -> None:
    """First rule whose match items all equal the request wins; per second or flat; none → 0."""
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        budget:
          prices:
            - {match: {type: image-to-video, resolution: 1080p}, credits: 50}
            - {match: {resolution: 1080p}, credits_per_second: 5}
            - {match: {resolution: 720p}, credits_per_second: 2.5}
        defaults: {duration: 4}
        campaigns:
          - name: c
            prompt: p
            image_url: https://x.example/i.jpg
            matrix:
              type: [text-to-video, image-to-video]
              resolution: [1080p, 720p, 480p]
        """,
    )
    got = [(j.request["type"], j.request["resolution"], j.credits) for j in jobs]
    assert got == [
        ("text-to-video", "1080p", 20.0),
        ("text-to-video", "720p", 10.0),
        ("text-to-video", "480p", 0.0),
        ("image-to-video", "1080p", 50.0),
        ("image-to-video", "720p", 10.0),
        ("image-to-video", "480p", 0.0),
    ]


def test_per_second_price_without_duration_is_an_error(tmp_path: Path) -> None:
    """A per-second rule cannot price a job that has no duration."""
    with pytest.raises(ManifestError) as info:
        jobs_of(
            tmp_path,
            "version: 1\nbudget: {prices: [{credits_per_second: 2}]}\n"
            "campaigns: [{name: c, prompt: p}]\n",
        )
    assert info.value.field == "budget.prices[0]"


def test_job_fields(tmp_path: Path) -> None:
    """Jobs carry the manifest path, manifest-order index, tags and soul."""
    manifest = load(
        tmp_path,
        """
        version: 1
        campaigns:
          - {name: a, prompt: p, tags: [nightly, x]}
          - {name: b, prompt: "{n}", matrix: {n: [1, 2]}}
        """,
    )
    jobs = expand(manifest)
    assert [(j.campaign, j.index) for j in jobs] == [("a", 0), ("b", 1), ("b", 2)]
    assert {j.manifest for j in jobs} == {str(manifest.path)}
    assert jobs[0].tags == ("nightly", "x") and jobs[1].tags == ()
    assert jobs[1].request == {"prompt": "1"}


# --- plan document -----------------------------------------------------------------------------


def make_job(key: str, credits: float, campaign: str = "c") -> Job:
    return Job(
        key=key,
        campaign=campaign,
        manifest="/m.yaml",
        index=0,
        vars={"k": key},
        request={"prompt": key},
        path=f"{campaign}/{key}.mp4",
        credits=credits,
    )


def test_plan_document_counts_statuses() -> None:
    """Missing keys are new; pending counts as new; credits only for new jobs."""
    jobs = [
        make_job(k, c) for k, c in [("a", 1), ("b", 2), ("c", 4), ("d", 8), ("e", 16), ("f", 0.5)]
    ]
    statuses = {"b": "downloaded", "c": "running", "d": "failed", "e": "pending", "zz": "failed"}
    doc = plan_document(jobs, statuses, orphaned=3)
    assert doc["summary"] == {
        "total": 6,
        "new": 3,
        "done": 1,
        "in_flight": 1,
        "failed": 1,
        "orphaned": 3,
        "estimated_credits": 17.5,
    }
    assert [(j["key"], j["status"]) for j in doc["jobs"]] == [
        ("a", "new"),
        ("b", "downloaded"),
        ("c", "running"),
        ("d", "failed"),
        ("e", "pending"),
        ("f", "new"),
    ]
    assert doc["jobs"][0] == {
        "key": "a",
        "campaign": "c",
        "status": "new",
        "vars": {"k": "a"},
        "request": {"prompt": "a"},
        "path": "c/a.mp4",
    }
    assert json.loads(json.dumps(doc)) == doc


def test_plan_document_in_flight_statuses() -> None:
    """submitting, queued, running and completed are all in flight."""
    jobs = [make_job(k, 1) for k in "abcd"]
    statuses = dict(zip("abcd", ["submitting", "queued", "running", "completed"], strict=True))
    assert plan_document(jobs, statuses)["summary"]["in_flight"] == 4


def test_plan_statuses_summary_and_columns_are_the_document_s() -> None:
    """A str Enum status is shown as its value; ``finishing`` jobs count in flight; new jobs'
    credits are added in order (as floats add: 0.1 + 0.2 + 0.3, not 0.3 + 0.2 + 0.1); the
    columns are the entries' values, a column each, in their order."""
    from runner.cli.jsonout import Columns
    from runner.jobs import PLAN_COLUMNS, plan_columns, plan_entries, plan_statuses, plan_summary
    from runner.ledger import JobStatus

    jobs = [make_job(k, c) for k, c in [("a", 0.1), ("b", 0.2), ("c", 7), ("d", 0.3)]]
    statuses = {"b": JobStatus.PENDING, "c": JobStatus.DOWNLOADED}
    texts = plan_statuses(jobs, statuses)
    assert texts == ["new", "pending", "downloaded", "new"]
    assert all(type(text) is str for text in texts)
    summary = plan_summary(jobs, texts, orphaned=1, finishing=2)
    assert summary == {
        "total": 4,
        "new": 3,
        "done": 1,
        "in_flight": 2,
        "failed": 0,
        "orphaned": 1,
        "estimated_credits": number(0.1 + 0.2 + 0.3),
    }
    assert plan_document(jobs, statuses, 1, 2) == {
        "summary": summary,
        "jobs": plan_entries(jobs, texts),
    }
    columns = plan_columns(jobs, texts)
    assert tuple(columns) == PLAN_COLUMNS
    assert Columns(columns).rows() == plan_entries(jobs, texts)
    with pytest.raises(ValueError):
        plan_summary(jobs, texts[:2])


# --- properties --------------------------------------------------------------------------------

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)
AXIS_NAMES = st.sampled_from(["subject", "place", "mood", "light", "lens"])
# The examples share tmp_path only as the notional folder of a manifest; none writes there.
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def campaign_data(draw: st.DrawFn, name: str) -> dict[str, Any]:
    axes = draw(st.lists(AXIS_NAMES, min_size=1, max_size=3, unique=True))
    matrix: dict[str, Any] = {
        a: draw(st.lists(WORD, min_size=1, max_size=3, unique=True)) for a in axes
    }
    if draw(st.booleans()):
        matrix["aspect_ratio"] = draw(
            st.lists(st.sampled_from(["9:16", "16:9", "1:1"]), min_size=1, max_size=3, unique=True)
        )
    campaign: dict[str, Any] = {
        "name": name,
        "prompt": " ".join(f"{{{a}}}" for a in axes) + " " + draw(WORD),
        "matrix": matrix,
    }
    if draw(st.booleans()):
        campaign["duration"] = draw(st.integers(1, 10))
    if draw(st.booleans()):
        campaign["seeds"] = draw(st.lists(st.integers(0, 100), min_size=1, max_size=2, unique=True))
    return campaign


@st.composite
def manifest_data(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(WORD, min_size=1, max_size=4, unique=True))
    return {
        "version": 1,
        "vars": {"brand": draw(WORD)},
        "defaults": {"type": "text-to-video", "resolution": "720p"},
        "campaigns": [draw(campaign_data(n)) for n in names],
    }


def shuffled(value: Any, rnd: random.Random) -> Any:
    """The same data with every mapping's keys and every matrix list in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        items = [shuffled(v, rnd) for v in value]
        rnd.shuffle(items)
        return items
    return value


def expand_data(data: dict[str, Any], tmp: Path) -> dict[str, tuple[str, Any, Any]]:
    manifest = parse_manifest(yaml.safe_dump(data, sort_keys=False), path=tmp / "m.yaml")
    return {j.key: (j.campaign, j.vars, j.request) for j in expand(manifest)}


@PROPERTY
@given(data=manifest_data(), rnd=st.randoms(use_true_random=False))
def test_keys_do_not_depend_on_order(
    tmp_path: Path, data: dict[str, Any], rnd: random.Random
) -> None:
    """Reordering mapping keys, list values and campaigns keeps every key and its job."""
    before = expand_data(data, tmp_path)
    after = expand_data(shuffled(data, rnd), tmp_path)
    assert after == before


@PROPERTY
@given(data=manifest_data(), which=st.integers(0, 3), word=WORD)
def test_editing_one_campaign_changes_only_its_keys(
    tmp_path: Path, data: dict[str, Any], which: int, word: str
) -> None:
    """A new prompt changes all keys of that campaign and no other campaign's keys."""
    index = which % len(data["campaigns"])
    edited = json.loads(json.dumps(data))
    edited["campaigns"][index]["prompt"] += " " + word
    name = data["campaigns"][index]["name"]
    before, after = expand_data(data, tmp_path), expand_data(edited, tmp_path)
    untouched = {k for k, v in before.items() if v[0] != name}
    assert {k for k, v in after.items() if v[0] != name} == untouched
    assert not ({k for k, v in after.items() if v[0] == name} & before.keys())


@PROPERTY
@given(data=manifest_data(), which=st.integers(0, 3), word=WORD)
def test_adding_a_matrix_value_keeps_existing_keys(
    tmp_path: Path, data: dict[str, Any], which: int, word: str
) -> None:
    """A new value adds jobs to that campaign only; every existing job keeps its key."""
    index = which % len(data["campaigns"])
    edited = json.loads(json.dumps(data))
    axis = next(iter(edited["campaigns"][index]["matrix"]))
    values = edited["campaigns"][index]["matrix"][axis]
    new = word + "new"
    if new in values or axis == "aspect_ratio":
        return
    values.append(new)
    before, after = expand_data(data, tmp_path), expand_data(edited, tmp_path)
    assert before.items() <= after.items()
    assert {after[k][0] for k in after.keys() - before.keys()} == {data["campaigns"][index]["name"]}


# --- output paths and provider fields checked at validate time (issue 10, SPEC v2 §3) -------


def test_filenames_are_portable(tmp_path: Path) -> None:
    """What Windows, SMB, exFAT and sync folders refuse is replaced (SPEC v2 §3)."""
    jobs = jobs_of(
        tmp_path,
        """
        version: 1
        output: {filename: "{campaign}/{look}.mp4"}
        campaigns:
          - name: street
            prompt: p
            matrix:
              look: ['Look 01: oversized trench? "final" <v2>', "CON", "aux.old", "end. ", "a|b*c"]
        """,
    )
    assert [j.path for j in jobs] == [
        "street/Look 01_ oversized trench_ _final_ _v2_.mp4",
        "street/_CON.mp4",
        "street/_aux.old.mp4",
        "street/end. .mp4",  # only a segment's own end is trimmed
        "street/a_b_c.mp4",
    ]


def test_long_names_keep_their_extension(tmp_path: Path) -> None:
    jobs = jobs_of(
        tmp_path,
        'version: 1\noutput: {filename: "{t}.mp4"}\n'
        f"campaigns: [{{name: c, prompt: p, matrix: {{t: [{'é' * 300}]}}}}]\n",
    )
    (name,) = [j.path for j in jobs]
    assert name.endswith("é.mp4") and len(name.encode()) == 200


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["x.mp4", "x.mp4.part"], "the same file"),
        (["x.mp4", "x.mp4.part.id"], "the same file"),
        (["Look.mp4", "look.mp4"], "case-insensitive"),
        (["café.mp4", "cafe\u0301.mp4"], "the same file"),
    ],
    ids=["part", "part-id", "case", "unicode-form"],
)
def test_colliding_output_paths_are_refused(
    tmp_path: Path, values: list[str], message: str
) -> None:
    """Paths that would meet on disk (a temporary file, a case-insensitive disk, a folder)."""
    quoted = ", ".join(f'"{v}"' for v in values)
    with pytest.raises(ManifestError, match=message) as info:
        jobs_of(
            tmp_path,
            f"version: 1\noutput: {{filename: '{{name}}'}}\n"
            f"campaigns: [{{name: c, prompt: p, matrix: {{name: [{quoted}]}}}}]\n",
        )
    assert info.value.field == "output.filename"


@pytest.mark.parametrize("name", ["ledger.db", "runner.lock", "LEDGER.DB-wal"])
def test_state_file_names_are_refused(tmp_path: Path, name: str) -> None:
    """output.dir may be the state directory: a video must never overwrite the ledger."""
    with pytest.raises(ManifestError, match="runner's own state files"):
        jobs_of(
            tmp_path,
            f"version: 1\noutput: {{dir: state, filename: '{name}'}}\n"
            "campaigns: [{name: c, prompt: p}]\n",
        )


def test_paths_past_the_os_limit_are_refused(tmp_path: Path) -> None:
    """A path longer than PATH_MAX fails at validate time, not at every run."""
    deep = "/".join(["{seg}"] * 25) + "/{key}.mp4"
    with pytest.raises(ManifestError, match="more than this system's") as info:
        jobs_of(
            tmp_path,
            f"version: 1\noutput: {{dir: {tmp_path}, filename: '{deep}'}}\n"
            f"campaigns: [{{name: c, prompt: p, matrix: {{seg: [{'s' * 190}]}}}}]\n",
        )
    assert info.value.field == "output.filename"


def test_an_output_dir_segment_past_name_max_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="longer than 255 bytes") as info:
        jobs_of(
            tmp_path,
            f"version: 1\noutput: {{dir: {tmp_path}/{'d' * 300}}}\n"
            "campaigns: [{name: c, prompt: p}]\n",
        )
    assert info.value.field == "output.dir"


def test_the_default_output_dir_is_checked_with_the_state_dir(tmp_path: Path) -> None:
    """Without output.dir the paths land in <state>/videos: checked when that is known."""
    manifest = load(tmp_path, "version: 1\ncampaigns: [{name: c, prompt: p}]\n")
    assert len(expand(manifest, state_dir=tmp_path / "state")) == 1
    with pytest.raises(ManifestError, match="longer than"):
        expand(manifest, state_dir=tmp_path / ("s" * 300))


@pytest.mark.parametrize(
    ("field", "hint"),
    [
        ("model: Alice", False),
        ("model: dop", False),
        ("model: requests/x", False),
        ("model: 'a b/c'", False),
        ("matrix: {model: [Alice, Bob]}", True),
    ],
)
def test_model_ids_for_the_platform(tmp_path: Path, field: str, hint: bool) -> None:
    """SPEC v2 §3: for provider higgsfield a model is owner/name[/...]; a matrix key named
    model was probably meant as a template variable, and the message says so."""
    with pytest.raises(ManifestError, match="does not look like a model id") as info:
        jobs_of(
            tmp_path,
            f"version: 1\nprovider: {{name: higgsfield}}\n"
            f"campaigns: [{{name: c, prompt: p, {field}}}]\n",
        )
    assert ("template variable" in info.value.message) is hint
    assert info.value.line == 3


def test_model_ids_that_pass(tmp_path: Path) -> None:
    jobs = jobs_of(
        tmp_path,
        "version: 1\nprovider: {name: higgsfield}\ncampaigns:\n"
        "  - {name: c, prompt: p, model: higgsfield-ai/dop/standard}\n"
        "  - {name: d, prompt: p, matrix: {model: [kling/v2.1, owner/name]}}\n",
    )
    assert [j.request["model"] for j in jobs] == [
        "higgsfield-ai/dop/standard",
        "kling/v2.1",
        "owner/name",
    ]


def test_local_image_url_needs_a_provider_that_uploads(tmp_path: Path) -> None:
    text = (
        "version: 1\nprovider: {name: PROVIDER}\ncampaigns:\n"
        "  - {name: c, type: image-to-video, prompt: p, image_url: looks/1.jpg}\n"
    )
    with pytest.raises(ManifestError, match="has no upload endpoint") as info:
        jobs_of(tmp_path, text.replace("PROVIDER", "higgsfieldapi"))
    assert info.value.line == 4
    assert len(jobs_of(tmp_path, text.replace("PROVIDER", "higgsfield"))) == 1


# --- fast paths against the plain definitions ---------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(value=JSON_VALUES)
def test_canonical_json_is_json_dumps_sorted_and_compact(value: Any) -> None:
    """The encoder built once writes what ``json.dumps`` with the same arguments writes."""
    from runner.jobs.keys import canonical_json

    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


def test_canonical_json_refuses_as_json_dumps_and_recovers() -> None:
    """A circular or unencodable value is refused as ``json.dumps`` refuses it, and nothing
    left of it spoils the next value."""
    from runner.jobs.keys import canonical_json

    loop: list[Any] = [1]
    loop.append({"x": loop})
    for _ in range(2):
        with pytest.raises(ValueError, match="Circular"):
            canonical_json(loop)
        with pytest.raises(TypeError):
            canonical_json({"b": [1, object()]})
        shared = [1]
        assert canonical_json({"b": shared, "a": [shared, shared]}) == '{"a":[[1],[1]],"b":[1]}'


@given(
    request=st.dictionaries(st.sampled_from(["a", "rate", "seed", "seeds", "z", "é"]), JSON_VALUES),
    row=st.dictionaries(st.sampled_from(["look", "seed", "é"]), JSON_VALUES, max_size=2),
)
def test_key_parts_put_together_are_the_job_key(
    request: dict[str, Any], row: dict[str, Any]
) -> None:
    """A row's key parts, around any seed and variant, make the key of its whole request."""
    from runner.jobs.keys import canonical_json, job_key, key_of_text, key_parts, key_suffix

    head, tail = key_parts("camp", row, request)
    for seed, variant, soul in (
        (0, None, None),
        (-3, 1, "ava"),
        (2**40, None, "é"),
        (None, 0, None),
    ):
        text = head + canonical_json(seed) + tail + key_suffix(variant, soul)
        assert key_of_text(text) == job_key("camp", row, {**request, "seed": seed}, variant, soul)


SEGMENT_TEXT = st.lists(
    st.sampled_from(["CON", "con", "Com", "lpt", "AUX", "nul", "PRN", "1", "9", "0", "¹", ".",
                     " ", "-", "_", "a", "é", "$", "IN", "OUT", ":", "/", "mp4", "x" * 70]),
    max_size=8,
).map("".join)  # fmt: skip


RESERVED_LIKE = [
    "CON",
    "con.mp4",
    "Com1",
    "com1.a.b",
    "LPT9.mp4",
    "lpt0",
    "COM10",
    "AUX-1",
    "COM",
    "nul.",
    "PRN_",
    "CONIN$",
    "com¹.mp4",
    "Aux.x",
    "x.CON",
    "xnul",
    "a" * 201,
]


@given(text=SEGMENT_TEXT)
@example(text="")
def test_sanitize_shortcut_changes_nothing(text: str) -> None:
    """A segment the shortcut passes as portable is what the whole cleaning makes of it."""
    from runner.manifest.template import _portable, sanitize_segment

    for t in (text, *RESERVED_LIKE):
        assert sanitize_segment(t) == _portable(t)


@pytest.mark.parametrize(
    "template",
    [
        "{campaign}/{a}-{b}-{seed}.mp4",
        "{seed}",
        "{seed}/{variant}.mp4",
        "COM{seed}.mp4",
        "{a}{seed}",
        "{a}{seed}{variant}-{key}",
        "x {a}. /{{lit}}-{seed}. ",
        "{key}",
        "{a}/{key}.mp4",
        "{b}{key}",
        "{campaign}/{a}/{b}",
    ],
)
def test_row_paths_are_the_plain_renderings(template: str) -> None:
    """``RowPaths``'s paths (a row filled once, the per-job names filled for each job) are
    what :func:`render_path` makes of each job's whole context: odd seeds, no seed, short
    keys, long segments, reserved names."""
    from runner.manifest.positions import Where
    from runner.manifest.template import RowPaths, render_path

    where = Where("m.yaml")
    paths = RowPaths(template, where, frozenset({"key", "seed", "variant"}))
    jobs = [
        [("0123abcd", 0, None), ("0123abce", 1, 2), ("0123abcf", -7, None)],
        [("0123abcd", None, 3), ("0123abce", None, None)],
        [("0123abcd", True, 0), ("a", 3, 1), ("C", 1, None), ("ON", 2, None)],
        [("key01", 1, None), ("é" * 10, 2**32, None), ("key03", 10**200, None)],
        [(f"key{i:02}", i, None) for i in range(12)],
    ]
    for a in ["a", "CO", "", "é:x", "1.5", "COM", "lpt", "x" * 190]:
        row = {"campaign": "c", "a": a, "b": "LPT", "key": None, "seed": None, "variant": None}
        for made in jobs:
            for column in (list, tuple):  # a tuple of values may be seen again
                keys, seeds, variants = (column(values) for values in zip(*made, strict=True))
                columns = {"key": keys, "seed": seeds, "variant": variants}
                expected = [
                    render_path(template, {**row, "key": k, "seed": s, "variant": v}, where)
                    for k, s, v in made
                ]
                assert paths(row, columns) == expected


@given(
    paths=st.lists(
        st.lists(
            st.sampled_from(["a", "A", "b/", "é", "É", ".part", ".id", "ledger.db", "LOCK", "-"]),
            min_size=1,
            max_size=4,
        ).map("".join),
        max_size=6,
    )
)
def test_paths_told_apart_in_c_are_those_the_whole_check_passes(paths: list[str]) -> None:
    """``check_paths``'s shortcut (ASCII, distinct however cased, no temporary or state file
    name) only ever passes paths its whole check passes too."""
    from types import SimpleNamespace

    from runner.jobs.keys import built_job
    from runner.jobs.paths import _check_each, _fold, _plainly_distinct
    from runner.manifest.positions import Where

    if not _plainly_distinct(paths):
        return
    m: Any = SimpleNamespace(where=lambda _field: Where("m.yaml"))
    jobs = [
        built_job(f"k{i}", "c", "m", i, {}, {}, p, 0.0, "unpriced", None, None, ())
        for i, p in enumerate(paths)
    ]
    _check_each(m, jobs, [_fold(p) for p in paths])  # raises nothing


def test_built_jobs_are_jobs() -> None:
    """``built_job`` makes a real ``Job``: equal to the constructor's, frozen, replaceable."""
    import dataclasses

    from runner.jobs.keys import built_job

    fields = ("k", "c", "/m.yaml", 3, {"a": 1}, {"prompt": "p"}, "c/k.mp4", 2.5, "unpriced")
    made = built_job(*fields, 1, "ava", ("t",))
    assert type(made) is Job
    assert made == Job(*fields, 1, "ava", ("t",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.key = "other"  # type: ignore[misc]
    assert dataclasses.replace(made, key="x") == Job("x", *fields[1:], 1, "ava", ("t",))


@given(texts=st.lists(st.text(max_size=40), max_size=5))
def test_keys_of_texts_are_each_text_s_key(texts: list[str]) -> None:
    from runner.jobs.keys import key_of_text, keys_of_texts

    assert keys_of_texts(texts) == [key_of_text(t) for t in texts]
    assert [key_of_text(t) for t in texts] == [
        hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts
    ]


@pytest.mark.parametrize("template", ["", "plain text", "1080p", "a b/c.mp4", "é"])
def test_templates_without_braces_render_as_they_are(template: str) -> None:
    """The shortcut for text alone gives what filling its pieces gives."""
    from runner.manifest.positions import Where
    from runner.manifest.template import _fill, parse, render

    where = Where("m.yaml")
    expected = _fill(parse(template), {}, where, frozenset())
    assert render(template, {}, where) == expected == template
