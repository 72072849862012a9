"""Options shared by several commands, and the one function that turns them into Settings."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from jobsync.config import Settings, load_settings
from jobsync.dialect import DIALECT_NAMES
from jobsync.errors import JobsyncError

F = TypeVar("F", bound=Callable[..., Any])


def api_options(func: F) -> F:
    """--api-url, --region, --token-file, --insecure, --dialect, --config."""
    options = [
        click.option(
            "--api-url",
            metavar="URL",
            help="Jobs API base URL (default https://api.integrator.io/v1; env JOBSYNC_API_URL).",
        ),
        click.option(
            "--region",
            type=click.Choice(["us", "eu"]),
            help="integrator.io region: us (default) or eu; instead of --api-url.",
        ),
        click.option(
            "--token-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the API token from this file instead of JOBSYNC_API_TOKEN.",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            default=None,
            help="Allow a plain http:// API URL that is not loopback (the token travels in clear).",
        ),
        click.option(
            "--dialect",
            type=click.Choice(DIALECT_NAMES),
            help="How the API speaks: integrator (integrator.io itself, default) or reference "
            "(the reference document's API). Env JOBSYNC_DIALECT.",
        ),
        config_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file (default ./jobsync.toml if present; env JOBSYNC_CONFIG).",
)


def build_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the command's flags (None = not given) over env over the config file."""
    return load_settings(flags, config_file=flags.get("config_file"))


def verbosity_options(func: F) -> F:
    """-v/--verbose (tracebacks, debug log) and -q/--quiet (errors only)."""
    func = click.option("-q", "--quiet", is_flag=True, help="Print only errors.")(func)
    return click.option(
        "-v", "--verbose", is_flag=True, help="Say more; show tracebacks on errors."
    )(func)


def exit_on_error(verbose: bool) -> _ErrorExit:
    """`with exit_on_error(verbose): ...` turns a JobsyncError into one line on stderr
    and its exit code; with --verbose the traceback comes too."""
    return _ErrorExit(verbose)


class _ErrorExit:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, click.ClickException):
            return False
        if self.verbose:
            traceback.print_exception(exc)
        if isinstance(exc, JobsyncError):
            click.echo(f"jobsync: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        # Not one of ours: still one line (no traceback without -v), and a failure exit.
        click.echo(f"jobsync: error: {type(exc).__name__}: {exc} (-v shows where)", err=True)
        sys.exit(1)
