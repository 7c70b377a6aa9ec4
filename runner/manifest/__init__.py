"""The manifest language: YAML with positions → a strict pydantic model → checked rules.

``load_manifest(path)`` is the entry point; ``runner.jobs.expand`` turns the result into jobs.
Every problem is a ``ManifestError`` whose text is ``file:line:col: field.path: message``.
"""

from __future__ import annotations

from runner.manifest.load import RESERVED_NAMES, load_manifest, parse_manifest
from runner.manifest.matrix import Row, expand_matrix, row_bound
from runner.manifest.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DOWNLOAD_CONCURRENCY,
    DEFAULT_FILENAME,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_JOBS,
    DEFAULT_POLL_INITIAL,
    DEFAULT_POLL_MAX,
    DEFAULT_PROVIDER,
    DEFAULT_REQUESTS_PER_SECOND,
    REQUEST_FIELDS,
    TEMPLATED_FIELDS,
    Budget,
    Campaign,
    Limits,
    Manifest,
    Matrix,
    Output,
    PriceRule,
    ProviderSettings,
    RequestFields,
    Soul,
    manifest_json_schema,
)
from runner.manifest.positions import FieldPath, Where, format_path
from runner.manifest.yamlpos import MAX_DEPTH, MAX_NODES

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DOWNLOAD_CONCURRENCY",
    "DEFAULT_FILENAME",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_JOBS",
    "DEFAULT_POLL_INITIAL",
    "DEFAULT_POLL_MAX",
    "DEFAULT_PROVIDER",
    "DEFAULT_REQUESTS_PER_SECOND",
    "MAX_DEPTH",
    "MAX_NODES",
    "REQUEST_FIELDS",
    "RESERVED_NAMES",
    "TEMPLATED_FIELDS",
    "Budget",
    "Campaign",
    "FieldPath",
    "Limits",
    "Manifest",
    "Matrix",
    "Output",
    "PriceRule",
    "ProviderSettings",
    "RequestFields",
    "Row",
    "Soul",
    "Where",
    "expand_matrix",
    "format_path",
    "load_manifest",
    "manifest_json_schema",
    "parse_manifest",
    "row_bound",
]
