"""Loading manifests: YAML with positions, the strict model, cross-field rules, settings."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import ManifestError
from runner.jobs import expand
from runner.manifest import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DOWNLOAD_CONCURRENCY,
    DEFAULT_FILENAME,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_JOBS,
    DEFAULT_POLL_INITIAL,
    DEFAULT_POLL_MAX,
    DEFAULT_PROVIDER,
    DEFAULT_REQUESTS_PER_SECOND,
    Limits,
    Manifest,
    load_manifest,
    parse_manifest,
)
from runner.manifest import matrix as matrix_module
from runner.manifest.globs import GlobError, bounded_glob
from runner.manifest.positions import Where

SPEC_EXAMPLE = """\
version: 1
provider:
  name: higgsfieldapi
  base_url: null
limits:
  concurrency: 4
  requests_per_second: 2
  download_concurrency: 4
  max_attempts: 5
  poll_initial: 5
  poll_max: 30
  max_jobs: 10000
budget:
  max_credits: 2000
  prices:
    - {match: {resolution: 1080p}, credits_per_second: 5}
    - {match: {}, credits_per_second: 3}
output:
  dir: null
  filename: "{campaign}/{key}.mp4"
vars:
  brand: Acme
souls:
  ava:
    name: brand_influencer_v1
    images: [https://cdn.example.com/ava/01.jpg, refs/ava/*.jpg]
defaults:
  type: text-to-video
  duration: 8
  resolution: 1080p
  aspect_ratio: "9:16"
campaigns:
  - name: fall-drop
    tags: [nightly]
    soul: ava
    prompt: "{subject} on {place}, {brand} outfit, cinematic lighting"
    matrix:
      subject: [A fashion influencer, A street dancer]
      place: [a city sidewalk, a rooftop]
      aspect_ratio: ["9:16", "16:9"]
      include:
        - {subject: A chef, place: a kitchen}
      exclude:
        - {place: a rooftop, aspect_ratio: "16:9"}
    seeds: [1, 2]
    rows: prompts.csv
  - name: outfit-breakdown
    type: image-to-video
    prompt: "Outfit breakdown, smooth camera dolly"
    image_url: "{image}"
    camera_fixed: false
    matrix:
      image: [https://cdn.example.com/look1.jpg, https://cdn.example.com/look2.jpg]
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Manifest:
    return load_manifest(write(tmp_path, text))


def refused(tmp_path: Path, text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        expand(load(tmp_path, text))
    return info.value


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    (tmp_path / "refs" / "ava").mkdir(parents=True)
    for name in ("02.jpg", "01.jpg"):
        (tmp_path / "refs" / "ava" / name).write_bytes(b"\xff\xd8")
    (tmp_path / "prompts.csv").write_text("subject,place\nA monk,a temple\n", encoding="utf-8")
    # v2: local soul images need a provider that uploads them (SPEC v2 §3).
    write(tmp_path, SPEC_EXAMPLE.replace("name: higgsfieldapi", "name: higgsfield"))
    return tmp_path


def test_the_spec_example_loads(spec_dir: Path) -> None:
    """SPEC §3's example manifest, with the provider that can upload its local soul images,
    is valid and expands to the expected number of jobs."""
    manifest = load_manifest(spec_dir / "m.yaml")
    assert manifest.provider.name == "higgsfield"
    assert manifest.budget.max_credits == 2000
    assert manifest.vars == {"brand": "Acme"}
    assert manifest.souls["ava"].name == "brand_influencer_v1"
    # 2×2×2 = 8, minus 2 excluded, plus the chef and one CSV row = 8 rows, × 2 seeds; plus 2.
    assert len(expand(manifest)) == 18


def test_limit_defaults_are_the_named_constants() -> None:
    """An empty limits mapping gets the SPEC defaults, which are module constants."""
    limits = Limits()
    assert (limits.concurrency, DEFAULT_CONCURRENCY) == (4, 4)
    assert (limits.requests_per_second, DEFAULT_REQUESTS_PER_SECOND) == (2, 2)
    assert (limits.download_concurrency, DEFAULT_DOWNLOAD_CONCURRENCY) == (4, 4)
    assert (limits.max_attempts, DEFAULT_MAX_ATTEMPTS) == (5, 5)
    assert (limits.poll_initial, DEFAULT_POLL_INITIAL) == (5, 5)
    assert (limits.poll_max, DEFAULT_POLL_MAX) == (30, 30)
    assert (limits.max_jobs, DEFAULT_MAX_JOBS) == (10_000, 10_000)


def test_minimal_manifest_defaults(tmp_path: Path) -> None:
    """Only version and campaigns are required; everything else has a default."""
    manifest = load(tmp_path, "version: 1\ncampaigns: [{name: a, prompt: hi}]\n")
    assert manifest.provider.name == DEFAULT_PROVIDER == "higgsfieldapi"
    assert manifest.provider.base_url is None and manifest.provider.api_key_env is None
    assert manifest.limits == Limits()
    assert manifest.output.dir is None and manifest.output.filename == DEFAULT_FILENAME
    assert manifest.budget.prices == [] and manifest.budget.max_credits is None
    assert manifest.path == (tmp_path / "m.yaml").resolve()
    assert manifest.path.is_absolute()


def test_provider_settings(tmp_path: Path) -> None:
    """The official platform dialect, a base URL and the name of the key's variable."""
    manifest = load(
        tmp_path,
        """
        version: 1
        provider: {name: higgsfield, base_url: "http://127.0.0.1:8808", api_key_env: MY_KEY}
        campaigns: [{name: a, prompt: hi, model: higgsfield-ai/dop/standard}]
        """,
    )
    assert manifest.provider.name == "higgsfield"
    assert manifest.provider.base_url == "http://127.0.0.1:8808"
    assert manifest.provider.api_key_env == "MY_KEY"
    assert expand(manifest)[0].request == {"prompt": "hi", "model": "higgsfield-ai/dop/standard"}


def test_unknown_provider_is_refused(tmp_path: Path) -> None:
    """Only the two dialects exist."""
    err = refused(tmp_path, "version: 1\nprovider: {name: runway}\ncampaigns: [{name: a}]\n")
    assert (err.line, err.field) == (2, "provider.name")
    assert "'higgsfieldapi' or 'higgsfield'" in err.message


def test_output_dir_default_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default <state>/videos; a relative output.dir resolves against the current directory."""
    default = load(tmp_path, "version: 1\ncampaigns: [{name: a}]\n")
    assert default.output_dir(tmp_path / "state") == tmp_path / "state" / "videos"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = load(tmp_path, "version: 1\noutput: {dir: out/videos}\ncampaigns: [{name: a}]\n")
    assert relative.output_dir(tmp_path / "state") == elsewhere / "out" / "videos"


def test_soul_images_urls_and_sorted_globs(spec_dir: Path) -> None:
    """URLs stay as given; local globs resolve beside the manifest, sorted, absolute."""
    manifest = load_manifest(spec_dir / "m.yaml")
    assert manifest.soul_images("ava") == [
        "https://cdn.example.com/ava/01.jpg",
        str(spec_dir / "refs" / "ava" / "01.jpg"),
        str(spec_dir / "refs" / "ava" / "02.jpg"),
    ]


def test_the_spec_example_as_written_is_refused_by_v2(spec_dir: Path) -> None:
    """With higgsfieldapi (no upload endpoint) its local soul glob can only fail at run time,
    so v2 refuses it at validate time, naming the entry."""
    err = refused(spec_dir, SPEC_EXAMPLE)
    assert (err.line, err.field) == (26, "souls.ava.images[1]")
    assert "higgsfieldapi has no upload endpoint" in err.message


def test_soul_glob_matching_nothing_is_refused(tmp_path: Path) -> None:
    """A local glob with no files names the soul's image entry."""
    err = refused(
        tmp_path,
        """
        version: 1
        provider: {name: higgsfield}
        souls:
          ava:
            name: ava
            images:
              - https://cdn.example.com/a.jpg
              - refs/*.jpg
        campaigns: [{name: a, soul: ava}]
        """,
    )
    assert (err.line, err.field) == (9, "souls.ava.images[1]")
    assert "'refs/*.jpg' matches no file" in err.message


def test_yaml_is_read_by_the_core_schema(tmp_path: Path) -> None:
    """9:16 is a string (not base 60), yes/no are strings, 010 is ten, dates are strings."""
    manifest = load(
        tmp_path,
        """
        version: 1
        vars: {a: yes, b: no, c: 010, d: 2024-01-31, e: on, f: 1_000, g: !!str 8, h: 0x10}
        defaults: {aspect_ratio: 9:16}
        campaigns: [{name: a, prompt: hi}]
        """,
    )
    assert manifest.vars == {
        "a": "yes",
        "b": "no",
        "c": 10,
        "d": "2024-01-31",
        "e": "on",
        "f": "1_000",
        "g": "8",
        "h": 16,
    }
    assert manifest.defaults.aspect_ratio == "9:16"


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    """Aliases and << merges work; a campaign's own keys win over merged ones."""
    manifest = load(
        tmp_path,
        """
        version: 1
        defaults: &base {prompt: shared, duration: 5}
        campaigns:
          - <<: *base
            name: a
          - <<: [*base, {resolution: 720p, duration: 6}]
            name: b
            duration: 8
        """,
    )
    got = [(c.prompt, c.duration, c.resolution) for c in manifest.campaigns]
    assert got == [("shared", 5, None), ("shared", 8, "720p")]


def test_an_alias_of_the_wrong_type_is_located_at_its_key(tmp_path: Path) -> None:
    """An aliased mapping where a string belongs: the error names the key using the alias."""
    err = refused(
        tmp_path,
        "version: 1\ndefaults: &base {prompt: p}\ncampaigns: [{name: c, prompt: *base}]\n",
    )
    assert (err.line, err.column, err.field) == (3, 23, "campaigns[0].prompt")
    assert err.message == "Input should be a valid string"


def test_duplicate_key_inside_a_flow_mapping(tmp_path: Path) -> None:
    """Duplicates are errors in flow style too, located at the second key."""
    err = refused(tmp_path, "version: 1\ncampaigns: [{name: a, name: b}]\n")
    assert (err.line, err.column, err.field) == (2, 23, "campaigns[0].name")
    assert "duplicate key 'name'" in err.message


def test_error_carries_file_line_column_and_field(tmp_path: Path) -> None:
    """ManifestError's attributes and its one-line text agree."""
    path = write(tmp_path, "version: 1\ncampaigns:\n  - name: a\n    seed: -1\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    err = info.value
    assert (err.file, err.line, err.column, err.field) == (str(path), 4, 11, "campaigns[0].seed")
    assert str(err) == (
        f"{path}:4:11: campaigns[0].seed: Input should be greater than or equal to 0 (got -1)"
    )


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    """Pydantic finds every problem; the message names the first in the file."""
    err = refused(
        tmp_path,
        """
        version: 1
        limits: {concurrency: -1, max_jobs: x}
        campaigns: [{name: a, duration: 0}]
        """,
    )
    assert (err.line, err.field) == (3, "limits.concurrency")
    assert err.message.endswith("(and 2 more problems)")


def test_strict_types_do_not_coerce(tmp_path: Path) -> None:
    """A quoted number is not a number, a float is not an int, a number is not a string."""
    for field, value in [
        ("duration", '"8"'),
        ("duration", "8.0"),
        ("prompt", "8"),
        ("camera_fixed", "1"),
    ]:
        err = refused(tmp_path, f"version: 1\ncampaigns:\n  - name: a\n    {field}: {value}\n")
        assert (err.line, err.field) == (4, f"campaigns[0].{field}"), (field, value)


def test_poll_max_below_poll_initial_is_refused(tmp_path: Path) -> None:
    """Polling cannot back off to less than where it started."""
    err = refused(
        tmp_path, "version: 1\nlimits: {poll_initial: 10, poll_max: 5}\ncampaigns: [{name: a}]\n"
    )
    assert (err.line, err.field) == (2, "limits")
    assert "poll_max must not be smaller than poll_initial" in err.message


def test_var_named_like_a_request_field_is_refused(tmp_path: Path) -> None:
    """vars are template variables only; a request field there would be silently ignored."""
    err = refused(tmp_path, "version: 1\nvars: {prompt: x}\ncampaigns: [{name: a}]\n")
    assert (err.line, err.field) == (2, "vars.prompt")


def test_seed_in_a_row_conflicts_with_seeds(tmp_path: Path) -> None:
    """A matrix seed and campaign seeds cannot both decide the seed."""
    err = refused(
        tmp_path,
        "version: 1\ncampaigns:\n  - name: a\n    seeds: [1]\n    matrix:\n      seed: [4]\n",
    )
    assert (err.line, err.field) == (6, "campaigns[0].matrix.seed")


def test_text_to_video_needs_a_prompt(tmp_path: Path) -> None:
    """A text-to-video job without a prompt is refused where the type was set."""
    err = refused(tmp_path, "version: 1\ndefaults: {type: text-to-video}\ncampaigns: [{name: a}]\n")
    assert (err.line, err.field) == (2, "defaults.type")


def test_max_jobs_is_exact_and_counts_seeds(tmp_path: Path) -> None:
    """Exactly max_jobs jobs pass; one more is refused before any row is built."""
    text = """
        version: 1
        limits: {max_jobs: 12}
        campaigns:
          - name: a
            prompt: "{x}"
            matrix: {x: [1, 2, 3]}
            seeds: [1, 2]
          - name: b
            prompt: "{y}"
            matrix: {y: [1, 2, 3]}
            seeds: [SEEDS]
        """
    assert len(expand(load(tmp_path, text.replace("SEEDS", "1, 2")))) == 12
    err = refused(tmp_path, text.replace("SEEDS", "1, 2, 3"))
    assert (err.line, err.field) == (11, "campaigns[1].matrix")
    assert "can expand to 9 jobs, 15 with the campaigns before it" in err.message


def test_huge_product_is_refused_arithmetically(tmp_path: Path) -> None:
    """A 10^40 product is refused at once, without building anything."""
    axes = "\n".join(f"      k{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" for i in range(40))
    err = refused(tmp_path, f"version: 1\ncampaigns:\n  - name: a\n    matrix:\n{axes}\n")
    assert "can expand to 1" + "0" * 40 + " jobs" in err.message


def test_csv_with_bom_and_quoted_cells(tmp_path: Path) -> None:
    """Spreadsheet exports: a UTF-8 BOM and quoted cells with commas and newlines."""
    (tmp_path / "rows.csv").write_bytes(
        '\ufeffsubject,place\n"A chef, smiling","a kitchen\nat night"\n'.encode()
    )
    jobs = expand(
        load(
            tmp_path,
            "version: 1\ncampaigns: [{name: a, prompt: '{subject}/{place}', rows: rows.csv}]\n",
        )
    )
    assert [j.vars for j in jobs] == [
        {"subject": "A chef, smiling", "place": "a kitchen\nat night"}
    ]


@pytest.mark.parametrize(
    ("header", "column", "message"),
    [
        ("subject,subject", 2, "duplicate column 'subject'"),
        ("subject,my place", 2, "cannot be a template variable name"),
        ("subject,params", 2, "params cannot come from a CSV column"),
        ("key,subject", 1, "'key' is reserved"),
    ],
)
def test_csv_header_problems(tmp_path: Path, header: str, column: int, message: str) -> None:
    """Header cells are checked like matrix keys, located in the CSV file."""
    (tmp_path / "rows.csv").write_text(f"{header}\na,b\n", encoding="utf-8")
    err = refused(tmp_path, "version: 1\ncampaigns: [{name: a, rows: rows.csv}]\n")
    assert (err.file, err.line, err.column) == (str(tmp_path / "rows.csv"), 1, column)
    assert message in err.message


def test_csv_with_more_rows_than_max_jobs_stops_early(tmp_path: Path) -> None:
    """A long CSV is refused as soon as it passes max_jobs."""
    (tmp_path / "rows.csv").write_text("x\n" + "v\n" * 50, encoding="utf-8")
    err = refused(
        tmp_path, "version: 1\nlimits: {max_jobs: 10}\ncampaigns: [{name: a, rows: rows.csv}]\n"
    )
    assert (err.line, err.field) == (3, "campaigns[0].rows")
    assert "more than limits.max_jobs=10 rows" in err.message


def test_manifest_built_in_python_expands_without_positions() -> None:
    """A Manifest made with model_validate works; its errors just have no line."""
    manifest = Manifest.model_validate(
        {"version": 1, "campaigns": [{"name": "a", "prompt": "{nope}"}]}
    )
    with pytest.raises(ManifestError) as info:
        expand(manifest)
    assert info.value.line is None
    assert info.value.field == "campaigns[0].prompt"


def test_parse_manifest_reads_text_as_if_from_a_path(tmp_path: Path) -> None:
    """parse_manifest takes text; the path names errors and anchors relative files."""
    with pytest.raises(ManifestError) as info:
        parse_manifest(
            "version: 1\ncampaigns: [{name: a, rows: r.csv}]\n", path=tmp_path / "x.yaml"
        )
    assert info.value.file == str(tmp_path / "x.yaml")
    assert str(tmp_path / "r.csv") in info.value.message


def test_a_number_too_long_to_parse_is_refused(tmp_path: Path) -> None:
    """Python refuses ints past 4,300 digits; the loader refuses them first, with a position."""
    err = refused(tmp_path, f"version: 1\nvars: {{x: {'9' * 5000}}}\ncampaigns: [{{name: a}}]\n")
    assert (err.line, err.column, err.field) == (2, 11, "vars.x")
    assert "5000 digits is too long" in err.message


SYMBOLS = [*"{}[]:,-&*!|>'\"#%@` \n\tab1.~?<", "\x00", "é", "\ufeff", "<<"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SYMBOLS), max_size=60).map("".join))
def test_any_text_is_a_manifest_or_a_manifest_error(text: str) -> None:
    """Fuzzed YAML-ish text never escapes as another exception."""
    try:
        expand(parse_manifest("version: 1\n" + text, path=Path("/nonexistent/m.yaml")))
    except ManifestError as err:
        assert err.file == "/nonexistent/m.yaml"


def test_manifest_path_is_canonical(tmp_path: Path) -> None:
    """Reached through `..` or a symlink, a manifest has one path (the ledger keys on it)."""
    write(tmp_path, "version: 1\ncampaigns: [{name: a, prompt: p}]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.yaml").symlink_to(tmp_path / "m.yaml")
    paths = {
        load_manifest(tmp_path / "m.yaml").path,
        load_manifest(tmp_path / "sub" / ".." / "m.yaml").path,
        load_manifest(tmp_path / "link.yaml").path,
    }
    assert paths == {(tmp_path / "m.yaml").resolve()}


# --- guards that hold before the work (issue 10) --------------------------------------------


def test_an_escaped_surrogate_pair_is_the_character(tmp_path: Path) -> None:
    """json.dumps writes 🎬 as \\ud83c\\udfac: YAML (a JSON superset) reads it as 🎬."""
    manifest = load(tmp_path, 'version: 1\ncampaigns: [{name: a, prompt: "\\ud83c\\udfac x"}]\n')
    assert manifest.campaigns[0].prompt == "🎬 x"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('version: 1\ncampaigns:\n  - {name: a, prompt: "\\ud83c"}\n', 3),
        ('version: 1\nvars: {"k\\udfac": 1}\ncampaigns: [{name: a, prompt: p}]\n', 2),
        ('version: 1\ncampaigns:\n  - name: a\n    prompt: "x\\udfac\\ud83c"\n', 4),
    ],
    ids=["value", "key", "reversed-pair"],
)
def test_a_lone_surrogate_is_refused_with_its_line(tmp_path: Path, text: str, line: int) -> None:
    err = refused(tmp_path, text)
    assert err.line == line
    assert "lone surrogate" in err.message


def test_a_nul_is_refused(tmp_path: Path) -> None:
    err = refused(tmp_path, 'version: 1\ncampaigns: [{name: a, prompt: p, rows: "a\\0b"}]\n')
    assert (err.line, "NUL") == (2, "NUL") and "NUL" in err.message


def test_parse_manifest_refuses_surrogates_in_the_text(tmp_path: Path) -> None:
    """Text handed in directly (not decoded from a file) may hold a raw surrogate."""
    with pytest.raises(ManifestError, match="lone surrogate U\\+D800") as info:
        parse_manifest("version: 1\ncampaigns: [{name: a, prompt: \ud800}]\n", path="m.yaml")
    assert (info.value.line, info.value.column) == (2, 31)


def test_manifest_read_stops_at_the_size_cap() -> None:
    """/dev/zero as a manifest: refused after 8 MiB, not read forever."""
    with pytest.raises(ManifestError, match="too big for a manifest"):
        load_manifest("/dev/zero")


@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "folder"])
def test_csv_rows_must_be_a_regular_file(tmp_path: Path, source: str) -> None:
    """rows: /dev/zero, a FIFO with no writer, a folder: refused at once, nothing blocks."""
    if source == "fifo":
        os.mkfifo(tmp_path / "rows.csv")
        source = "rows.csv"
    elif source == "folder":
        (tmp_path / "rows.csv").mkdir()
        source = "rows.csv"
    err = refused(tmp_path, f"version: 1\ncampaigns: [{{name: a, prompt: p, rows: {source}}}]\n")
    assert "is not a regular file" in err.message or "Is a directory" in err.message


def test_csv_read_stops_at_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSV size cap holds while reading (a smaller cap keeps the test small)."""
    monkeypatch.setattr("runner.manifest.load.MAX_FILE_BYTES", 1000)
    (tmp_path / "rows.csv").write_text("x\n" + "a\n" * 1000)
    err = refused(tmp_path, "version: 1\ncampaigns: [{name: a, prompt: '{x}', rows: rows.csv}]\n")
    assert "is bigger than 1000 bytes" in err.message


SOUL = """\
version: 1
provider: {{name: higgsfield}}
souls:
  ava:
    name: ava
    images: [{images}]{extra}
campaigns: [{{name: a, prompt: p, soul: ava}}]
"""


def soul_manifest(tmp_path: Path, images: str, extra: str = "") -> Path:
    path = tmp_path / "project" / "m.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(SOUL.format(images=images, extra=extra), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("/etc/host*", "outside the manifest's folder"),
        ("'~/.bash*'", "outside the manifest's folder"),
        ("../secrets/*.jpg", "leaves the manifest's folder"),
        ("refs/../../x.jpg", "leaves the manifest's folder"),
    ],
)
def test_soul_globs_stay_in_the_manifest_folder(tmp_path: Path, images: str, message: str) -> None:
    """Local soul images are uploaded: absolute, ~ and .. globs are refused by default."""
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(soul_manifest(tmp_path, images))
    assert (info.value.line, info.value.field) == (6, "souls.ava.images[0]")


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"\xff\xd8")
    path = soul_manifest(tmp_path, "refs/*.jpg")
    (path.parent / "refs").mkdir()
    (path.parent / "refs" / "a.jpg").symlink_to(outside)
    with pytest.raises(ManifestError, match="leads outside the manifest's folder"):
        load_manifest(path)


def test_allow_outside_lets_a_soul_name_any_file(tmp_path: Path) -> None:
    """The documented field: allow_outside: true permits absolute and .. globs."""
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "1.jpg").write_bytes(b"\xff\xd8")
    images = f"'{tmp_path}/faces/*.jpg', ../faces/1.jpg"
    manifest = load_manifest(soul_manifest(tmp_path, images, "\n    allow_outside: true"))
    found = manifest.soul_images("ava")
    assert [Path(p).resolve() for p in found] == [(tmp_path / "faces" / "1.jpg").resolve()] * 2


def test_soul_globs_are_bounded(tmp_path: Path) -> None:
    """A glob looks at a bounded number of entries and matches a bounded number of files."""
    for i in range(30):
        (tmp_path / "d" / str(i)).mkdir(parents=True)
        (tmp_path / "d" / str(i) / "x.jpg").write_bytes(b"")
    assert len(bounded_glob("d/*/x.jpg", tmp_path)) == 30
    assert len(bounded_glob("d/**/*.jpg", tmp_path)) == 30
    with pytest.raises(GlobError, match="directory entries"):
        bounded_glob("d/*/*", tmp_path, max_entries=40)
    with pytest.raises(GlobError, match="more than 10"):
        bounded_glob("d/*/x.jpg", tmp_path, max_matches=10)


def test_a_disk_walking_glob_ends_quickly(tmp_path: Path) -> None:
    """/*/*/*/*/*/* with allow_outside stops at the entry budget instead of walking the disk."""
    path = soul_manifest(tmp_path, "'/*/*/*/*/*/*'", "\n    allow_outside: true")
    with pytest.raises(ManifestError, match=r"directory entries|matches"):
        load_manifest(path)


def test_exclude_and_include_are_linear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values are made canonical a number of times linear in rows plus entries (no rows ×
    entries comparisons): 10,000 exclude entries over a 100 × 100 matrix."""
    calls = 0
    real = matrix_module.canonical

    def counting(value: object) -> str:
        nonlocal calls
        calls += 1
        return real(value)

    monkeypatch.setattr(matrix_module, "canonical", counting)
    rows = 10_000
    exclude = [{"a": i, "b": i} for i in range(100)] + [{"a": 1000 + i} for i in range(9_900)]
    include = [{"a": i, "extra": i} for i in range(100)]
    got = matrix_module.expand_matrix(
        {"a": list(range(100)), "b": list(range(100))},
        include,
        exclude,
        where=lambda path: Where("m.yaml"),
        base=("campaigns", 0, "matrix"),
    )
    assert len(got) == rows - 100
    entries = len(exclude) * 2 + len(include)
    assert calls <= 2 * 200 + 2 * entries + 10 * rows
