"""Where the files of `schemas/` are: beside the package in a checkout, inside it in a wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CANDIDATES = (_PACKAGE / "schemas", _PACKAGE.parent / "schemas")


def schema_path(name: str) -> Path:
    """The path of `schemas/<name>`; FileNotFoundError names where it looked."""
    for folder in _CANDIDATES:
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"schema file {name} not found in {', '.join(map(str, _CANDIDATES))}")


def schema_text(name: str) -> str:
    """The text of `schemas/<name>`."""
    return schema_path(name).read_text(encoding="utf-8")
