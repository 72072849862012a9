"""`jobsync demo`: the README's first command, offline."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
from click.testing import CliRunner

from jobsync.cli import cli


def demo(db: Path, dialect: str = "integrator") -> tuple[int, str]:
    args = ["demo", "--db", str(db), "--flows", "5", "--days", "4", "--dialect", dialect]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_demo_syncs_a_warehouse_and_answers_two_questions(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    code, output = demo(db, dialect)
    assert code == 0, output
    inserted = int(re.search(r"([\d,]+) new", output).group(1).replace(",", ""))  # type: ignore[union-attr]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM jobs").fetchone() == (inserted,)
        assert con.execute("SELECT outcome FROM sync_runs").fetchall() == [("succeeded",)]
    assert "Which flows failed most" in output and "How long do flow runs take" in output
    assert "median_s" in output


def test_a_rerun_replaces_the_earlier_demo(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    assert demo(db)[0] == 0
    assert demo(db)[0] == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM sync_runs").fetchone() == (1,)


def test_the_demo_never_overwrites_another_file(tmp_path: Path) -> None:
    db = tmp_path / "precious.duckdb"
    db.write_bytes(b"not a demo")
    code, output = demo(db)
    assert code == 2 and "not a demo warehouse" in output
    assert db.read_bytes() == b"not a demo"
