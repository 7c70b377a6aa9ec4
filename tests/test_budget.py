"""Budget semantics over nights (SPEC v2 §5): ``max_credits`` caps each run, ``max_total_credits``
caps everything the manifest ever had charged, orphaned jobs included. Real ledger, real files,
the mock in-process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runner import app
from runner.ledger import JobStatus, default_ledger_url, open_ledger
from runner.mock import MockOptions, base_urls, create_app
from runner.mock.testing import IN_PROCESS_ORIGIN, MOCK_ENV

NIGHTLY = """
version: 1
limits: {{concurrency: 4, requests_per_second: 1000, poll_initial: 0.001, poll_max: 0.01}}
budget:
  max_credits: 100
{total}  prices:
    - {{match: {{}}, credits_per_second: 2}}
vars:
  night: "{night}"
defaults: {{type: text-to-video, duration: 5}}
campaigns:
  - name: teaser
    prompt: "{{subject}}, night {{night}}"
    matrix:
      subject: [a, b, c, d, e, f]
    seeds: [1, 2]
"""  # 12 jobs a night, 10 credits each: 120 credits wanted, 100 allowed per run


class Nights:
    """One manifest whose ``vars`` change every night, run against one in-process mock."""

    def __init__(self, tmp_path: Path, total: float | None = None) -> None:
        self.manifest = tmp_path / "nightly.yaml"
        self.state = tmp_path / "state"
        self.total = f"  max_total_credits: {total}\n" if total is not None else ""
        self.mock = create_app(MockOptions(latency_min=0, latency_max=0, seed=5))

    def run(self, night: int, options: app.RunOptions | None = None) -> app.RunResult:
        self.manifest.write_text(NIGHTLY.format(night=night, total=self.total))

        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.mock))

        environ = {**MOCK_ENV, "HIGGSFIELD_BASE_URL": base_urls(IN_PROCESS_ORIGIN)["higgsfieldapi"]}
        env = app.Environment(environ=environ, api_client=client, download_client=client)
        return app.run(self.manifest, self.state, options or app.RunOptions(), env)

    def charged_nights(self) -> dict[str, int]:
        """Jobs that were submitted, by the night in their prompt."""
        with open_ledger(default_ledger_url(self.state)) as ledger:
            rows = ledger.jobs()
        sent: dict[str, int] = {}
        for row in rows:
            if row.generation_id is not None:
                night = row.request["prompt"].rsplit(" ", 1)[1]
                sent[night] = sent.get(night, 0) + 1
        return sent


def test_the_run_cap_applies_to_each_night_not_to_history(tmp_path: Path) -> None:
    """Five nights, new jobs each night, max_credits 100: every night submits 100 credits
    (10 jobs) and stops with the numbers, however much earlier nights spent."""
    nights = Nights(tmp_path)
    for night in range(1, 6):
        result = nights.run(night)
        assert result.outcome.submitted == 10, night
        assert result.outcome.credits_this_run == 100
        assert result.outcome.credits_total == 100 * night
        stop = result.outcome.budget_stop or ""
        assert "this run to 110 credits" in stop and "cap of 100" in stop, stop
    assert nights.charged_nights() == {str(n): 10 for n in range(1, 6)}


def test_the_total_cap_stops_the_fourth_night_counting_orphaned_jobs(tmp_path: Path) -> None:
    """max_total_credits 300: nights 1–3 submit 100 each; on night 4 every earlier job is
    orphaned, still counted, and nothing more is submitted; the message gives the numbers."""
    nights = Nights(tmp_path, total=300)
    for night in (1, 2, 3):
        assert nights.run(night).outcome.submitted == 10
    fourth = nights.run(4)
    assert fourth.outcome.submitted == 0
    stop = fourth.outcome.budget_stop or ""
    assert "total to 310 credits" in stop and "max_total_credits 300" in stop, stop
    assert "300 charged so far" in stop
    with open_ledger(default_ledger_url(nights.state)) as ledger:
        statuses = {r.status for r in ledger.jobs() if "night 4" not in r.request["prompt"]}
    assert statuses == {JobStatus.ORPHANED}
    assert nights.charged_nights() == {"1": 10, "2": 10, "3": 10}


@pytest.mark.parametrize("cap", [0, 35, 100])
def test_dry_run_gives_exactly_the_submissions_a_run_makes(tmp_path: Path, cap: int) -> None:
    """--dry-run names the very jobs a run with the same budget then submits, and stops (or
    not) where it does."""
    nights = Nights(tmp_path)
    nights.run(1)
    dry = nights.run(2, app.RunOptions(max_credits=cap, dry_run=True))
    real = nights.run(2, app.RunOptions(max_credits=cap))
    with open_ledger(default_ledger_url(nights.state)) as ledger:
        night_2 = [r for r in ledger.jobs() if "night 2" in r.request["prompt"]]
    sent = [r.key for r in night_2 if r.generation_id]
    assert [j.key for j in dry.would_submit] == sent
    assert len(sent) == real.outcome.submitted == cap // 10
    assert dry.outcome.budget_stop == real.outcome.budget_stop
