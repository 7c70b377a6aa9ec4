"""The manifest's pydantic model (version 1): strict types, named defaults, the JSON Schema.

The model checks shapes and types. Rules that relate fields to each other (soul references,
matrix keys, templates, sizes) are checked by ``runner.manifest.load`` and ``runner.jobs``,
which know where each value came from and can name its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    model_validator,
)

from runner.manifest.globs import GlobError, bounded_glob
from runner.manifest.matrix import Row
from runner.manifest.positions import Document, FieldPath, Where, format_path

MANIFEST_VERSION = 1
ProviderName = Literal["higgsfieldapi", "higgsfield"]
DEFAULT_PROVIDER: ProviderName = "higgsfieldapi"
DEFAULT_CONCURRENCY = 4
DEFAULT_REQUESTS_PER_SECOND = 2.0
DEFAULT_DOWNLOAD_CONCURRENCY = 4
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_POLL_INITIAL = 5.0
DEFAULT_POLL_MAX = 30.0
DEFAULT_GENERATION_TIMEOUT = 6 * 3600.0
DEFAULT_MAX_JOBS = 10_000
DEFAULT_OUTPUT_SUBDIR = "videos"
DEFAULT_FILENAME = "{campaign}/{key}.mp4"

SCHEMA_ID = "https://json-schema.org/draft/2020-12/schema"

CAMPAIGN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^https?://", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]|^[\\/]")  # C:\x, \x: absolute on Windows

VideoType = Literal["text-to-video", "image-to-video"]
Duration = Annotated[int, Field(gt=0, description="Seconds of video.")]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Params = dict[str, JsonValue]

# Request fields in the order they appear in a request body, with the type each must have
# wherever it is set (defaults, campaign, matrix values, include entries, CSV cells).
REQUEST_FIELD_TYPES: dict[str, Any] = {
    "type": VideoType,
    "prompt": str,
    "duration": Duration,
    "resolution": str,
    "aspect_ratio": str,
    "seed": Seed,
    "image_url": str,
    "camera_fixed": bool,
    "model": str,
    "params": Params,
}
REQUEST_FIELDS: tuple[str, ...] = tuple(REQUEST_FIELD_TYPES)
TEMPLATED_FIELDS = frozenset({"prompt", "resolution", "aspect_ratio", "image_url", "model"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ProviderSettings(_Strict):
    """Which API dialect to talk to, and where. The key itself is never in a manifest."""

    name: ProviderName = DEFAULT_PROVIDER
    base_url: Annotated[str, Field(pattern=r"^https?://")] | None = Field(
        None, description="Overridden by $HIGGSFIELD_BASE_URL."
    )
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = Field(
        None, description="Name of the environment variable holding the API key."
    )


class Limits(_Strict):
    """Concurrency, rate, retry and polling limits, and the expansion guard."""

    concurrency: PositiveInt = Field(
        DEFAULT_CONCURRENCY, description="Generations in flight (submitted, not yet terminal)."
    )
    requests_per_second: PositiveFloat = Field(
        DEFAULT_REQUESTS_PER_SECOND, description="All API calls together."
    )
    download_concurrency: PositiveInt = DEFAULT_DOWNLOAD_CONCURRENCY
    max_attempts: PositiveInt = Field(
        DEFAULT_MAX_ATTEMPTS, description="Per job, across runs, for transient failures."
    )
    poll_initial: NonNegativeFloat = Field(
        DEFAULT_POLL_INITIAL, description="Seconds before the first status poll."
    )
    poll_max: PositiveFloat = Field(DEFAULT_POLL_MAX, description="Longest polling interval.")
    max_jobs: PositiveInt = Field(
        DEFAULT_MAX_JOBS, description="Expansion guard; raise it deliberately for big manifests."
    )
    generation_timeout: PositiveFloat = Field(
        DEFAULT_GENERATION_TIMEOUT,
        description="Seconds after its submit that a run stops waiting for a generation "
        "(it stays in flight for `runner collect`).",
    )

    @model_validator(mode="after")
    def _poll_order(self) -> Limits:
        if self.poll_max < self.poll_initial:
            raise ValueError("poll_max must not be smaller than poll_initial")
        return self


class PriceRule(_Strict):
    """Credits for requests whose fields equal every item of ``match``."""

    match: dict[str, JsonValue] = Field(default_factory=dict)
    credits_per_second: NonNegativeFloat | None = None
    credits: NonNegativeFloat | None = Field(None, description="Flat credits per job.")

    @model_validator(mode="after")
    def _one_price(self) -> PriceRule:
        if (self.credits_per_second is None) == (self.credits is None):
            raise ValueError("a price rule needs exactly one of credits_per_second and credits")
        return self


class Budget(_Strict):
    """An optional credit cap and the price list used to estimate credits."""

    max_credits: NonNegativeFloat | None = Field(
        default=None, description="Cap on the estimated credits one run submits."
    )
    max_total_credits: NonNegativeFloat | None = Field(
        default=None,
        description="Cap on the estimated credits of every job of this manifest ever charged "
        "(submitted and not refunded, orphaned jobs included).",
    )
    prices: list[PriceRule] = Field(
        default_factory=list, description="First matching rule wins; no match costs 0."
    )


class Output(_Strict):
    """Where videos go: ``dir`` (default <state>/videos) and a filename template."""

    dir: str | None = None
    filename: Annotated[str, Field(min_length=1)] = Field(
        DEFAULT_FILENAME, description="Template over campaign, key, seed, variant, row variables."
    )


class Soul(_Strict):
    """A soul (identity) model trained from reference images."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    images: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description="URLs, or local globs relative to the manifest, inside its folder.",
    )
    allow_outside: bool = Field(
        False,
        description="Let local image globs be absolute, start with ~ or leave the manifest's "
        "folder (they are uploaded to the provider: say so deliberately).",
    )


class RequestFields(_Strict):
    """Fields of a generation request; unset fields are left to lower layers."""

    type: VideoType | None = None
    prompt: str | None = None
    duration: Duration | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    seed: Seed | None = None
    image_url: str | None = None
    camera_fixed: bool | None = None
    model: str | None = Field(None, description="Model id for the higgsfield provider.")
    params: Params | None = Field(None, description="Extra body fields passed through.")

    def request_items(self) -> dict[str, Any]:
        """The request fields set here (explicitly, even to null), in request order."""
        return {f: getattr(self, f) for f in REQUEST_FIELDS if f in self.model_fields_set}


class Matrix(BaseModel):
    """GitHub Actions ``strategy.matrix``: lists to multiply, plus ``include``/``exclude``."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    include: list[dict[str, JsonValue]] = Field(default_factory=list)
    exclude: list[dict[str, JsonValue]] = Field(default_factory=list)
    __pydantic_extra__: dict[str, Annotated[list[JsonValue], Field(min_length=1)]] = Field(
        init=False
    )

    @property
    def axes(self) -> dict[str, list[Any]]:
        """The plain keys and their values, in declaration order."""
        return dict(self.__pydantic_extra__ or {})


class Campaign(RequestFields):
    """A named group of jobs: request fields, a matrix, seeds or variants, CSV rows."""

    name: Annotated[str, Field(pattern=CAMPAIGN_NAME.pattern, max_length=100)]
    tags: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]] = Field(
        default_factory=list
    )
    soul: str | None = Field(None, description="A key of souls:.")
    matrix: Matrix | None = None
    seeds: list[Seed] | None = Field(None, min_length=1, description="Each row once per seed.")
    variants: PositiveInt | None = Field(None, description="N jobs per row, seeds derived.")
    rows: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="CSV file relative to the manifest; each row is one more matrix row."
    )


class Manifest(_Strict):
    """A loaded manifest. Build it with ``runner.manifest.load_manifest``."""

    model_config = ConfigDict(title="runner manifest")

    version: Literal[1]
    provider: ProviderSettings = Field(default_factory=ProviderSettings)
    limits: Limits = Field(default_factory=Limits)
    budget: Budget = Field(default_factory=Budget)
    output: Output = Field(default_factory=Output)
    vars: dict[Annotated[str, Field(pattern=VARIABLE_NAME.pattern)], JsonValue] = Field(
        default_factory=dict
    )
    souls: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")], Soul] = Field(
        default_factory=dict
    )
    defaults: RequestFields = Field(default_factory=RequestFields)
    campaigns: list[Campaign] = Field(min_length=1)

    _path: Path = PrivateAttr(default_factory=lambda: Path("manifest.yaml").absolute())
    _doc: Document | None = PrivateAttr(None)
    _csv: dict[int, list[Row]] = PrivateAttr(default_factory=dict)
    # souls' images as recorded in the ledger: then nothing beside the manifest is read
    _recorded: dict[str, list[str]] | None = PrivateAttr(None)

    @property
    def path(self) -> Path:
        """Absolute, symlink-free path of the file the manifest was loaded from."""
        return self._path

    def where(self, path: FieldPath, *, key: bool = False) -> Where:
        """The file position of a field, for error messages."""
        if self._doc is not None:
            return self._doc.where(path, key=key)
        return Where(str(self._path), field=format_path(path) or None)

    def locator(self) -> Callable[[FieldPath], Where]:
        """``where`` for value positions, as a plain function (cheap in loops)."""
        doc, file = self._doc, str(self._path)
        if doc is not None:
            return doc.where
        return lambda path: Where(file, field=format_path(path) or None)

    def csv_rows(self, campaign_index: int) -> list[Row]:
        """The rows read from the campaign's ``rows:`` CSV file (empty without one)."""
        if self._recorded is not None and self.campaigns[campaign_index].rows is not None:
            raise self.where(("campaigns", campaign_index, "rows")).error(
                "a manifest parsed from its ledger record has no CSV rows: its jobs are there"
            )
        return self._csv.get(campaign_index, [])

    def output_dir(self, state_dir: Path) -> Path | str:
        """``output.dir`` (relative to the current directory), else ``<state>/videos``; an
        ``s3://bucket/prefix`` URI is returned as written (it is no local path)."""
        if self.output.dir is None:
            return Path(state_dir).expanduser().absolute() / DEFAULT_OUTPUT_SUBDIR
        if self.output.dir.startswith("s3://"):
            return self.output.dir
        return Path(self.output.dir).expanduser().absolute()

    def soul_images(self, soul: str) -> list[str]:
        """A soul's images: URLs as given, local globs as sorted absolute paths.

        Local globs are bounded (``runner.manifest.globs``) and, unless the soul says
        ``allow_outside: true``, must be relative and match only files inside the manifest's
        folder (symlinks resolved): these files are uploaded to the provider. A manifest
        parsed from its ledger record gives the images its recording host matched.
        """
        if self._recorded is not None and soul in self._recorded:
            return list(self._recorded[soul])
        spec = self.souls[soul]
        folder = self._path.parent
        images: list[str] = []
        for i, entry in enumerate(spec.images):
            if _URL.match(entry):
                images.append(entry)
                continue
            where = self.where(("souls", soul, "images", i))
            pattern = entry
            if spec.allow_outside:
                pattern = str(Path(entry).expanduser())
            elif entry.startswith("~") or Path(entry).is_absolute() or _DRIVE.match(entry):
                raise where.error(
                    f"{entry!r} is outside the manifest's folder: local images are looked "
                    "for inside it (set allow_outside: true on the soul to allow this)"
                )
            elif ".." in Path(entry).parts:
                raise where.error(
                    f"{entry!r} leaves the manifest's folder with '..' "
                    "(set allow_outside: true on the soul to allow this)"
                )
            try:
                found = bounded_glob(pattern, folder)
            except GlobError as err:
                raise where.error(f"{entry!r} {err}") from None
            if not found:
                looked = pattern if Path(pattern).is_absolute() else str(folder / pattern)
                raise where.error(f"{entry!r} matches no file (looked for {looked})")
            if not spec.allow_outside:
                inside = folder.resolve()
                for file in found:
                    if not file.resolve().is_relative_to(inside):
                        raise where.error(
                            f"{entry!r} matches {file}, which leads outside the manifest's "
                            "folder (set allow_outside: true on the soul to allow this)"
                        )
            images.extend(str(p.absolute()) for p in found)
        return images


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of a manifest, for editors (yaml-language-server)."""
    schema = Manifest.model_json_schema()
    return {"$schema": SCHEMA_ID, **schema}
