"""runner — batch job runner for Higgsfield AI video generation, driven by YAML manifests.

The pipeline, one module each: manifest (YAML → model) → jobs (expansion, keys, costs) →
ledger (SQLite state) → executor (async submit/poll/download) → providers (API dialects)
→ downloads (verified files) → report. ``runner.cli`` is the only module that prints.
"""

__version__ = "0.1.0"
