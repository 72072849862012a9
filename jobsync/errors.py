"""The one place where jobsync's errors live, each with the exit code the CLI gives it.

Callers catch exactly what they can handle: a transport failure (retried by the client,
then raised) is not an HTTP status error, and neither is an API error with its server code.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAUTHORIZED = 3
EXIT_LOCKED = 4
EXIT_PARTIAL = 75  # EX_TEMPFAIL: the run stopped early on purpose; rerun to continue


class JobsyncError(Exception):
    """Base of every error jobsync raises on purpose; `str()` is the one line the CLI prints."""

    exit_code = EXIT_FAILURE


class ConfigError(JobsyncError):
    """Bad flags, environment or config file: the user must change how jobsync is called."""

    exit_code = EXIT_USAGE


class ApiError(JobsyncError):
    """Anything that went wrong talking to the Jobs API."""


class TransportError(ApiError):
    """The request never got a usable answer: connection refused or reset, timeout, bad body."""


class Untrusted(TransportError):
    """The server's TLS certificate failed verification: no retry can change that, and no
    request (nor the token) goes to it until it is trusted."""


class HttpStatusError(ApiError):
    """The API answered with an error status; `code` and `message` come from its error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code
        self.message = message


class NotFound(HttpStatusError):
    """404 `not_found`."""


class InvalidOperation(HttpStatusError):
    """400 `invalid_operation`, e.g. cancelling an export job."""


class Conflict(HttpStatusError):
    """409 `conflict`, e.g. cancelling a finished job."""


class Unauthorized(HttpStatusError):
    """401: the token was rejected."""

    exit_code = EXIT_UNAUTHORIZED


class RequestTooLong(HttpStatusError):
    """414: the request line was over the API's limit (8 KB)."""


class RateLimited(HttpStatusError):
    """429 that outlasted the retry budget."""


class ServerError(HttpStatusError):
    """5xx that outlasted the retry budget."""


class WarehouseError(JobsyncError):
    """The DuckDB file cannot be used: unreadable, corrupt, or of a newer schema."""


class WarehouseLocked(WarehouseError):
    """Another process (usually another `jobsync sync`) holds the warehouse."""

    exit_code = EXIT_LOCKED
