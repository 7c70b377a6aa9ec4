"""Every error the runner raises on purpose, in one tree.

    RunnerError                      base; ``exit_code`` tells the CLI how to leave
    ├── UsageError                   bad command-line usage                         (exit 2)
    ├── ManifestError                bad manifest: file, line, column, field path   (exit 2)
    ├── LedgerError                  the ledger cannot be opened or used            (exit 2)
    │   ├── LedgerLockedError        another process holds the executor lock       (exit 2)
    │   └── TransitionError          a status change the state machine refuses     (exit 2)
    ├── ProviderError                something the provider answered (or did not)
    │   ├── TransientError           worth retrying: connection errors, timeouts, 408, 5xx
    │   │   ├── UnknownOutcomeError  a submit may or may not have reached the provider:
    │   │   │                        retry with the same idempotency key only
    │   │   └── ThrottledError       429 or the platform's concurrency-limit 400: backpressure,
    │   │                            not a failure; ``retry_after`` in seconds when given
    │   ├── PermanentError           other 4xx, malformed answers: the job fails with the message
    │   │   └── ExhaustedError       a transient error until ``max_attempts`` ran out
    │   ├── DeadlineError            a generation or a throttled call past its deadline: held
    │   └── FatalError               401/403: credentials or account refused; the run stops (exit 3)
    ├── DownloadError                a video download failed
    │   ├── UnsafeURLError           scheme or address refused by the download policy
    │   └── ExpiredURLError          403/404/410 on the video URL: refresh it once
    └── BudgetExceededError          a credit cap stops new submissions                 (exit 1)

Messages never contain secrets: provider errors are built from status codes and the
provider's own error text, never from request headers.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130


class RunnerError(Exception):
    """Base of every error the runner raises on purpose."""

    exit_code: int = EXIT_USAGE


class UsageError(RunnerError):
    """The command line asks for something that cannot be done."""


class ManifestError(RunnerError):
    """A manifest that cannot be loaded, validated or expanded.

    ``str(err)`` is one paragraph: ``file:line:col: field.path: message``. ``also`` holds the
    other problems found in the same pass (each its own paragraph), first one first.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        also: tuple[ManifestError, ...] = (),
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.also = also
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<manifest>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        what = f"{self.field}: " if self.field else ""
        return f"{where}: {what}{self.message}"


class LedgerError(RunnerError):
    """The ledger database cannot be opened, migrated or written."""


class LedgerLockedError(LedgerError):
    """Another process is executing jobs against this ledger."""


class TransitionError(LedgerError):
    """A job status change that the state machine does not allow."""


class ProviderError(RunnerError):
    """Something went wrong talking to the provider."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.message = message
        self.status_code = status_code
        super().__init__(message)


class TransientError(ProviderError):
    """Worth retrying with backoff; counts against a job's ``max_attempts``.

    ``retry_after``: seconds from the answer's Retry-After header, when it had one; every
    call to the provider then waits that long (SPEC §6).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status_code=status_code)


class UnknownOutcomeError(TransientError):
    """The request may have reached the provider; retry with the same idempotency key only."""


class ThrottledError(TransientError):
    """Backpressure (429, concurrency limit). Does not use up a job's attempts."""


class PermanentError(ProviderError):
    """The provider refused this request for good; the job fails with this message."""


class ExhaustedError(PermanentError):
    """A transient error that kept coming back until ``max_attempts`` ran out.

    ``last`` is the final transient error (an ``UnknownOutcomeError`` means the last submit may
    have reached the provider), ``attempts`` how many were used in all.
    """

    def __init__(self, last: TransientError, attempts: int) -> None:
        self.last = last
        self.attempts = attempts
        super().__init__(
            f"gave up after {attempts} attempts: {type(last).__name__}: {last.message}",
            status_code=last.status_code,
        )


class DeadlineError(ProviderError):
    """A wait that must end did not: a generation unfinished past ``generation_timeout``, or a
    call throttled for longer than the engine's ceiling. The job is left as it is (held) for
    the next run; the run goes on and ends."""


class FatalError(ProviderError):
    """Credentials or account refused (401/403): the whole run stops."""

    exit_code = EXIT_FATAL


class DownloadError(RunnerError):
    """A video could not be downloaded and verified."""

    exit_code = EXIT_FAILED


class UnsafeURLError(DownloadError):
    """A video URL whose scheme or address the download policy refuses."""


class ExpiredURLError(DownloadError):
    """The video URL answered 403/404/410: refresh it from the status endpoint once."""


class BudgetExceededError(RunnerError):
    """Submitting more would pass the credit cap."""

    exit_code = EXIT_FAILED
