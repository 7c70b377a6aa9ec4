"""The HTML report: one page for the people who review a night's output.

``build_report`` reads the ledger (never writes it) and writes ``templates/report.html.j2``
with a card per job (``templates/report_card.html.j2``), autoescaped, so every text from a
manifest or the provider is text, never markup. The page has its CSS inline and one small
script (filters by campaign, status and tag; a note where a video is missing), allowed by
its hash in the page's Content-Security-Policy; without the script every card shows. There
is no external resource, and provider URLs (which may carry signed tokens) are never
written: error texts lose their query strings, source images show by file name.

Per card: the seed or variant (what tells twins apart), soul, source image, duration, aspect
ratio and credits; ids and hashes sit in a ``<details>``. Videos are not embedded: a local
video's ``<video>`` points at its file by a path relative to the page (``preload="metadata"``
shows its first frame: posters would need a video decoder, a new system dependency), and a
video in S3 by a presigned URL that expires after ``presign_expiry`` (default 7 days).
``bundle=True`` copies the local videos into ``videos/`` beside the page, so the folder can be
zipped and shared; the relative links then stay valid wherever it is unpacked.

The stages, in the order data flows: ``page`` reads the rows once and writes the page,
``links`` finds each video, ``cards`` works out what a card shows, ``markup`` makes HTML.
"""

from __future__ import annotations

from runner.report.cards import tidy_error
from runner.report.links import BUNDLE_VIDEOS
from runner.report.page import ReportSummary, build_report

__all__ = ["BUNDLE_VIDEOS", "ReportSummary", "build_report", "tidy_error"]
