"""The chaos and bad-input suite of issue 6: attack `jobsync sync` and print what it survived.

    pip install -e '.[test]'            # once, in a fresh clone
    python scripts/chaos.py             # the short form (CI runs it): about two minutes
    python scripts/chaos.py --long      # 20+ kills, more runs under faults and bad input
    python scripts/chaos.py --seed 7 --only kills,faults --json

Every attack runs the simulated Jobs API in a process of its own (real sockets) and the real
CLI (`python -m jobsync sync`) as processes, then compares the DuckDB warehouse with the
simulated account's ground truth: every job the API lists, in the state it shows now
(nothing lost, no duplicate ids, nothing stale, nothing the API never showed). Progress
notes go to stderr; the table (or, with --json, a JSON document) to stdout. Exit status 1
when any case did not survive.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from chaos_attacks import LONG, SHORT, Context, bad_input, faults, kills, secrets, warehouse
from chaos_harness import AttackReport

from jobsync.dialect import DEFAULT_DIALECT, DIALECT_NAMES

ATTACKS: dict[str, Callable[[Context], AttackReport]] = {
    "kills": kills,
    "faults": faults,
    "bad_input": bad_input,
    "warehouse": warehouse,
    "secrets": secrets,
}
COLUMNS = ("attack", "cases tried", "survived", "jobs lost", "duplicates", "stale", "seconds")


def run_attacks(
    names: list[str],
    *,
    long: bool,
    seed: int,
    dialect: str,
    workdir: Path,
    note: Callable[[str], None],
) -> list[AttackReport]:
    """Run the named attacks in order, each in a folder of its own under `workdir`."""
    token = f"chaos-secret-{random.Random(seed).getrandbits(64):016x}"
    scale = LONG if long else SHORT
    reports = []
    for name in names:
        rng = random.Random(f"{seed}:{name}")
        context = Context(scale, seed, workdir, token, rng, dialect)
        note(f"{name} ...")
        started = time.monotonic()
        try:
            report = ATTACKS[name](context)
        except Exception as exc:  # the attack could not go on: a case not survived
            report = AttackReport(name)
            report.case("the attack ran to its end", False, f"{type(exc).__name__}: {exc}")
        report.seconds = time.monotonic() - started
        note(f"{name}: {report.survived}/{len(report.cases)} survived in {report.seconds:.0f} s")
        reports.append(report)
    return reports


def table(reports: list[AttackReport]) -> str:
    """The figures, one line per attack, then the notes and whatever did not survive."""
    rows = [COLUMNS]
    for r in reports:
        rows.append(
            (
                r.attack,
                str(len(r.cases)),
                str(r.survived),
                str(r.lost),
                str(r.duplicates),
                str(r.stale),
                f"{r.seconds:.0f}",
            )
        )
    total = [sum(int(row[i]) for row in rows[1:]) for i in range(1, 7)]
    rows.append(("total", *(str(value) for value in total)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.insert(-1, lines[1])
    notes = [f"{r.attack}: {note}" for r in reports for note in r.notes]
    failed = [f"NOT SURVIVED {r.attack}: {failure}" for r in reports for failure in r.failures()]
    return "\n".join([*lines, "", *notes, *(["", *failed] if failed else [])])


def machine() -> str:
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("duckdb", "pyarrow", "aiohttp")
    )
    return f"{platform.machine()}, Python {platform.python_version()}, {versions}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="the long form (20+ kills)")
    parser.add_argument("--seed", type=int, default=1, help="seed of accounts, faults, moments")
    parser.add_argument("--json", action="store_true", help="print a JSON document")
    parser.add_argument(
        "--dialect",
        choices=DIALECT_NAMES,
        default=DEFAULT_DIALECT,
        help=f"the API dialect the simulator and jobsync speak (default {DEFAULT_DIALECT})",
    )
    parser.add_argument(
        "--only",
        default=",".join(ATTACKS),
        help=f"comma-separated attacks to run (default all: {','.join(ATTACKS)})",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the warehouses and logs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(ATTACKS))
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def note(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="jobsync-chaos-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        reports = run_attacks(
            args.only,
            long=args.long,
            seed=args.seed,
            dialect=args.dialect,
            workdir=workdir,
            note=note,
        )
    survived = all(r.survived == len(r.cases) and not r.failures() for r in reports)
    form = "long" if args.long else "short"
    if args.json:
        document: dict[str, Any] = {
            "form": form,
            "seed": args.seed,
            "dialect": args.dialect,
            "machine": machine(),
            "seconds": round(time.monotonic() - started, 1),
            "survived": survived,
            "attacks": [r.as_dict() for r in reports],
        }
        print(json.dumps(document, indent=2))
    else:
        print(f"chaos ({form} form, seed {args.seed}, {args.dialect} dialect) on {machine()}")
        print(table(reports))
        print(f"\n{'every case survived' if survived else 'SOME CASES DID NOT SURVIVE'}")
    return 0 if survived else 1


if __name__ == "__main__":
    sys.exit(main())
