"""The chaos suite's short form (scripts/chaos.py) as CI runs it: each attack against the
simulator in its own process and `jobsync sync` as real processes, each warehouse compared
with the account's ground truth. Every case must survive, with no job lost, duplicated or
stale; a failure lists the cases that did not survive and why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jobsync.dialect import DEFAULT_DIALECT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import chaos


@pytest.mark.parametrize("attack", list(chaos.ATTACKS))
def test_every_case_of_the_short_form_survives(attack: str, tmp_path: Path) -> None:
    [report] = chaos.run_attacks(
        [attack], long=False, seed=1, dialect=DEFAULT_DIALECT, workdir=tmp_path, note=print
    )
    assert report.cases, "the attack tried nothing"
    assert report.failures() == []
    assert report.survived == len(report.cases)
    assert (report.lost, report.duplicates, report.stale) == (0, 0, 0)
    assert report.verdicts or attack == "secrets", "no warehouse was compared with the truth"


def test_the_script_prints_a_table_line_per_attack_and_exits_by_its_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = chaos.main(["--only", "warehouse", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("attack"))
    assert lines[header].split() == [
        "attack",
        "cases",
        "tried",
        "survived",
        "jobs",
        "lost",
        "duplicates",
        "stale",
        "seconds",
    ]
    row, total = lines[header + 2], lines[header + 4]
    assert row.startswith("4. warehouse file") and total.startswith("total")
    cases, survived, lost, duplicates, stale = map(int, row.split()[3:8])
    assert total.split()[1:6] == row.split()[3:8]
    assert cases >= 10 and (lost, duplicates, stale) == (0, 0, 0)
    failed = [line for line in lines if line.startswith("NOT SURVIVED")]
    assert len(failed) >= cases - survived
    assert status == (1 if failed else 0) and (survived == cases or status == 1)
    assert ("every case survived" in out) == (status == 0)
