"""``load_manifest``: read, parse with positions, validate, check cross-references, read CSVs."""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from runner.errors import ManifestError
from runner.manifest.matrix import Row
from runner.manifest.model import (
    REQUEST_FIELD_TYPES,
    REQUEST_FIELDS,
    VARIABLE_NAME,
    Budget,
    Campaign,
    Limits,
    Manifest,
    Output,
    PriceRule,
    ProviderSettings,
    RequestFields,
    Soul,
)
from runner.manifest.positions import Document, FieldPath, Where
from runner.manifest.template import check_path_template
from runner.manifest.yamlpos import MAX_FILE_BYTES, decode, load_document

# Names that mean something else in a template context or a filename.
RESERVED_NAMES = frozenset({"campaign", "key", "variant"})

_STRICT = {
    n: TypeAdapter(t, config=ConfigDict(strict=True)) for n, t in REQUEST_FIELD_TYPES.items()
}
_LAX = {n: TypeAdapter(t) for n, t in REQUEST_FIELD_TYPES.items()}


def read_capped(path: Path, limit: int, *, regular_only: bool = False) -> bytes:
    """At most ``limit`` bytes of ``path``, read as they stream: ``ValueError`` past that.

    The size is checked while reading, so ``/dev/zero`` or a growing file cannot make us read
    on. ``regular_only`` refuses anything but a plain file (a FIFO would block, a device never
    ends); it is opened non-blocking so that even the check cannot hang.
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if regular_only:
        flags |= getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    if regular_only and not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("is not a regular file")
    with open(fd, "rb", closefd=True) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is bigger than {limit} bytes")
    return data


def load_manifest(path: str | Path) -> Manifest:
    """Load and check a manifest file; every problem is a ManifestError naming file and line."""
    file = str(path)
    p = Path(path)
    try:
        if p.is_dir():
            raise ManifestError("is a directory, not a manifest file", file=file)
        raw = read_capped(p, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ManifestError("no such file", file=file) from None
    except ValueError as err:
        raise ManifestError(f"too big for a manifest: it {err}", file=file) from None
    except OSError as err:
        raise ManifestError(f"cannot read: {err.strerror or err}", file=file) from None
    return parse_manifest(decode(raw, file), path=p, file=file)


def parse_manifest(
    text: str,
    *,
    path: str | Path,
    file: str | None = None,
    souls: Mapping[str, list[str]] | None = None,
) -> Manifest:
    """Check manifest text as if read from ``path`` (CSV files and globs resolve beside it).

    ``souls``: the souls' images as a ledger record has them (SPEC §8); then nothing beside
    the manifest is read — its souls' images are these, its CSV rows are not read (the jobs
    recorded in the ledger carry them), so the manifest's folder need not exist here."""
    file = file or str(path)
    doc = load_document(text, file)
    if doc.data is None:
        raise Where(file, 1, 1).error("the manifest is empty; it needs version: 1 and campaigns:")
    if not isinstance(doc.data, dict):
        raise doc.where(()).error("a manifest is a mapping (version:, campaigns:, ...)")
    try:
        manifest = Manifest.model_validate(doc.data)
    except ValidationError as err:
        raise _located(doc, err) from None
    manifest._path = Path(path).resolve()
    manifest._doc = doc
    manifest._recorded = dict(souls) if souls is not None else None
    _check(manifest)
    return manifest


# --- pydantic errors → positions -----------------------------------------------------------


def _located(doc: Document, err: ValidationError) -> ManifestError:
    found: list[tuple[Where, str]] = []
    for e in err.errors(include_url=False):
        path, is_key = _data_path(doc.data, e["loc"])
        where = doc.where(path, key=is_key or e["type"] == "extra_forbidden")
        found.append((where, _message(e, path)))
    found.sort(key=lambda wm: (wm[0].line or 10**9, wm[0].column or 0))
    seen: set[tuple[int | None, int | None, str | None]] = set()
    errors: list[ManifestError] = []
    for where, message in found:
        if (where.line, where.column, where.field) not in seen:
            seen.add((where.line, where.column, where.field))
            errors.append(where.error(message))
    first, rest = errors[0], errors[1:]
    if rest:
        first = ManifestError(
            f"{first.message} (and {len(rest)} more problem{'s' if len(rest) > 1 else ''})",
            file=first.file,
            line=first.line,
            column=first.column,
            field=first.field,
            also=tuple(rest),
        )
    return first


def _data_path(data: Any, loc: Iterable[int | str]) -> tuple[FieldPath, bool]:
    """Keep the parts of a pydantic loc that exist in the data; drop union and key tags."""
    path: list[str | int] = []
    current, is_key, missing = data, False, False
    for part in loc:
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
        elif part == "[key]":
            is_key = True
        elif isinstance(current, dict) and isinstance(part, str) and not missing:
            path.append(part)  # a missing field: name it, locate its parent
            missing = True
    return tuple(path), is_key


def _message(error: Any, path: FieldPath) -> str:
    kind, msg = error["type"], str(error["msg"])
    name = path[-1] if path else ""
    if kind == "extra_forbidden":
        message = f"unknown key {name!r}"
        close = difflib.get_close_matches(str(name), _fields_at(path[:-1]), n=1)
        return message + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return f"missing required key {name!r}"
    msg = msg.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = json.dumps(value, ensure_ascii=False)
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return msg


def _fields_at(parent: FieldPath) -> list[str]:
    model: type[BaseModel] | None
    match parent:
        case ():
            model = Manifest
        case ("provider",):
            model = ProviderSettings
        case ("limits",):
            model = Limits
        case ("budget",):
            model = Budget
        case ("budget", "prices", int()):
            model = PriceRule
        case ("output",):
            model = Output
        case ("souls", str()):
            model = Soul
        case ("defaults",):
            model = RequestFields
        case ("campaigns", int()):
            model = Campaign
        case _:
            model = None
    return list(model.model_fields) if model else []


# --- rules across fields ----------------------------------------------------------------------


def _check(m: Manifest) -> None:
    for name in m.vars:
        if name in RESERVED_NAMES or name in REQUEST_FIELDS:
            raise m.where(("vars", name), key=True).error(_reserved(name))
    for soul, spec in m.souls.items():
        if m.provider.name == "higgsfieldapi":
            _check_soul_urls(m, soul, spec.images)
        m.soul_images(soul)
    for i, rule in enumerate(m.budget.prices):
        for field in rule.match:
            if field not in REQUEST_FIELDS:
                where = m.where(("budget", "prices", i, "match", field), key=True)
                raise where.error(f"{field!r} is not a request field ({', '.join(REQUEST_FIELDS)})")
    check_path_template(m.output.filename, m.where(("output", "filename")))
    first_seen: dict[str, int] = {}
    for i, campaign in enumerate(m.campaigns):
        base: FieldPath = ("campaigns", i)
        if campaign.name in first_seen:
            line = m.where(("campaigns", first_seen[campaign.name], "name")).line
            raise m.where((*base, "name")).error(
                f"duplicate campaign name {campaign.name!r} (first at line {line})"
            )
        first_seen[campaign.name] = i
        _check_campaign(m, i, campaign)


def _check_soul_urls(m: Manifest, soul: str, images: list[str]) -> None:
    """The seed API cannot upload: every soul image must be a URL already (SPEC v2 §3)."""
    for i, entry in enumerate(images):
        if not entry.lower().startswith(("http://", "https://")):
            raise m.where(("souls", soul, "images", i)).error(
                f"{entry!r} is a local file, and provider higgsfieldapi has no upload "
                "endpoint: give an http(s) URL, or use provider higgsfield (it uploads)"
            )


def _reserved(name: str) -> str:
    if name in REQUEST_FIELDS:
        return f"{name!r} is a request field: set it in defaults, a campaign or a matrix"
    return f"{name!r} is reserved (campaign, key and variant are filled in by the runner)"


def _check_campaign(m: Manifest, i: int, c: Campaign) -> None:
    base: FieldPath = ("campaigns", i)
    if c.soul is not None and c.soul not in m.souls:
        defined = ", ".join(sorted(m.souls)) or "none"
        raise m.where((*base, "soul")).error(f"unknown soul {c.soul!r} (souls: {defined})")
    if c.seeds is not None and c.variants is not None:
        raise m.where((*base, "variants"), key=True).error("use seeds or variants, not both")
    multiplier = "seeds" if c.seeds is not None else "variants" if c.variants else None
    if multiplier and c.seed is not None:
        raise m.where((*base, "seed"), key=True).error(f"seed and {multiplier} conflict")
    if c.matrix is not None:
        mx: FieldPath = (*base, "matrix")
        axes, include, exclude = c.matrix.axes, c.matrix.include, c.matrix.exclude
        if not axes and not include:
            raise m.where(mx).error("a matrix needs at least one list of values or include")
        for key, values in axes.items():
            _check_key(m, (*mx, key), key, multiplier)
            for j, value in enumerate(values):
                _check_value(m, (*mx, key, j), key, value)
        for j, entry in enumerate(include):
            for key, value in entry.items():
                _check_key(m, (*mx, "include", j, key), key, multiplier)
                _check_value(m, (*mx, "include", j, key), key, value)
        for j, entry in enumerate(exclude):
            if not entry:
                raise m.where((*mx, "exclude", j)).error("an empty exclude entry drops every row")
            for key in entry:
                if key not in axes:
                    where = m.where((*mx, "exclude", j, key), key=True)
                    raise where.error(f"exclude key {key!r} is not a matrix key")
    if c.rows is not None and m._recorded is None:
        m._csv[i] = _read_csv(m, i, c.rows, multiplier)


def _check_key(m: Manifest, path: FieldPath, key: str, multiplier: str | None) -> None:
    where = m.where(path, key=True)
    if key in RESERVED_NAMES:
        raise where.error(_reserved(key))
    if key not in REQUEST_FIELDS and not VARIABLE_NAME.match(key):
        raise where.error(f"{key!r} cannot be a template variable name (letters, digits, _)")
    if key == "seed" and multiplier:
        raise where.error(f"a row sets seed, and the campaign has {multiplier}")


def _check_value(m: Manifest, path: FieldPath, key: str, value: Any) -> None:
    if key in REQUEST_FIELDS and value is not None:
        try:
            _STRICT[key].validate_python(value)
        except ValidationError as err:
            raise m.where(path).error(_message(err.errors()[0], path)) from None


def _read_csv(m: Manifest, i: int, rel: str, multiplier: str | None) -> list[Row]:
    here = m.where(("campaigns", i, "rows"))
    file = Path(here.file).parent / rel
    path = m.path.parent / rel
    try:
        raw = read_capped(path, MAX_FILE_BYTES, regular_only=True)
    except FileNotFoundError:
        raise here.error(f"CSV file not found: {path}") from None
    except ValueError as err:
        raise here.error(f"CSV file {path} {err}") from None
    except OSError as err:
        raise here.error(f"cannot read CSV file {path}: {err.strerror or err}") from None
    text = decode(raw, str(file))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise here.error(f"CSV file has no header row: {path}")
        _check_header(header, Where(str(file), 1), multiplier)
        rows: list[Row] = []
        for cells in reader:
            if not any(cells):
                continue
            at = Where(str(file), reader.line_num)
            if len(cells) != len(header):
                raise at.error(f"{len(cells)} cells, but the header has {len(header)}")
            rows.append(_csv_row(header, cells, at))
            if len(rows) > m.limits.max_jobs:
                raise here.error(f"CSV file has more than limits.max_jobs={m.limits.max_jobs} rows")
    except csv.Error as err:
        raise Where(str(file), reader.line_num).error(f"CSV error: {err}") from None
    if not rows:
        raise here.error(f"CSV file has a header but no rows: {path}")
    return rows


def _check_header(header: list[str], at: Where, multiplier: str | None) -> None:
    for col, name in enumerate(header, start=1):
        where = Where(at.file, at.line, col, name or None)
        if name in header[: col - 1]:
            raise where.error(f"duplicate column {name!r}")
        if name == "params":
            raise where.error("params cannot come from a CSV column")
        if name in RESERVED_NAMES:
            raise where.error(_reserved(name))
        if name not in REQUEST_FIELDS and not VARIABLE_NAME.match(name):
            raise where.error(f"column {name!r} cannot be a template variable name")
        if name == "seed" and multiplier:
            raise where.error(f"a row sets seed, and the campaign has {multiplier}")


def _csv_row(header: list[str], cells: list[str], at: Where) -> Row:
    values: dict[str, Any] = {}
    sources: dict[str, Where] = {}
    for name, cell in zip(header, cells, strict=True):
        where = Where(at.file, at.line, None, name)
        if "\x00" in cell:
            raise where.error("a NUL character is not allowed")
        if name in REQUEST_FIELDS:
            if cell == "":
                continue  # an empty cell leaves the field to the campaign and defaults
            try:
                values[name] = _LAX[name].validate_python(cell)
            except ValidationError as err:
                raise where.error(_message(err.errors()[0], (name,))) from None
        else:
            values[name] = cell
        sources[name] = where
    return Row(values, sources, at)
