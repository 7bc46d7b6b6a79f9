"""The command line end to end, in-process through ``main(argv)``: exit codes and no personal data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.domain.codec import record_from_json


@pytest.fixture
def node_dir(tmp_path: Path, db_url: str) -> Path:
    d = tmp_path / "node"
    assert main(["node", "init", str(d), "--id", "cq-test", "--division", "500157", "--database-url", db_url]) == 0
    return d


@pytest.fixture
def roster(tmp_path: Path) -> Path:
    out = tmp_path / "r.jsonl"
    args = ["synth", "--households", "40", "--seed", "5", "--period", "2026Q3", "--format", "jsonl"]
    args += ["--residence", "500157", "--registration", "511321", "--registration", "500157"]
    assert main([*args, "--owner", "500157", "--out", str(out)]) == 0
    return out


def test_roster_import_and_summary(node_dir: Path, roster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = roster.read_text(encoding="utf-8").splitlines()
    assert main(["roster", "import", "--config", str(node_dir), "--period", "2026Q3", str(roster)]) == 0
    assert f"accepted {len(lines)}" in capsys.readouterr().out
    assert main(["roster", "summary", "--config", str(node_dir), "--period", "2026Q3"]) == 0
    out = capsys.readouterr().out
    kinds = [json.loads(line)["kind"] for line in lines]
    for kind in ("migrant", "left_behind", "neither"):
        assert re.search(rf"\b{kind}\s+{kinds.count(kind)}\n", out), kind


def test_bad_rows_are_listed_by_line_and_reason_without_values(
    node_dir: Path, roster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = roster.read_text(encoding="utf-8").splitlines()[:3]
    broken = json.loads(good[2])
    secret_id, secret_name = broken["id_number"], broken["name"]
    broken["id_number"] = secret_id[:17] + ("0" if secret_id[17] != "0" else "1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([good[0], good[1], "not json", '{"name": "x"}', json.dumps(broken)]) + "\n", "utf-8")
    code = main(["roster", "import", "--config", str(node_dir), "--period", "2026Q3", str(bad)])
    captured = capsys.readouterr()
    assert code == 65
    assert "accepted 2" in captured.out
    assert "line 3: rejected [invalid_record]" in captured.err
    assert "line 4: rejected [invalid_record]" in captured.err
    assert "line 5: rejected [invalid_id_number]" in captured.err
    for secret in (secret_id, secret_name, broken["id_number"]):
        assert secret not in captured.out + captured.err


def test_reimport_is_refused_whole(node_dir: Path, roster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["roster", "import", "--config", str(node_dir), "--period", "2026Q3", str(roster)]
    assert main(argv) == 0
    assert main(argv) == 74
    err = capsys.readouterr().err
    assert "duplicate_record" in err
    first = record_from_json(json.loads(roster.read_text(encoding="utf-8").splitlines()[0]))
    assert first.name not in err


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        pytest.param(["node", "init", "{tmp}/x", "--id", "cq-x", "--division", "500112"], 65, id="retired_division"),
        pytest.param(["node", "init", "{tmp}/x", "--id", "Bad Id", "--division", "500157"], 78, id="bad_node_id"),
        pytest.param(["node", "info", "--config", "{tmp}/absent"], 78, id="missing_config"),
        pytest.param(["roster", "summary", "--config", "{tmp}/absent", "--period", "2026Q5"], 65, id="bad_period"),
        pytest.param(["id", "check", "11010519491231002X"], 0, id="valid_id"),
        pytest.param(["id", "check", "110105194912310021"], 65, id="invalid_id"),
        pytest.param(["divisions", "resolve", "500105"], 0, id="resolve_single_successor"),
        pytest.param(["divisions", "resolve", "500112"], 65, id="resolve_ambiguous"),
    ],
)
def test_exit_codes(tmp_path: Path, argv: list[str], code: int) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code


def test_id_check_never_echoes_the_number(capsys: pytest.CaptureFixture[str]) -> None:
    main(["id", "check", "--all", "110105194912310021", "11010519491231002X"])
    captured = capsys.readouterr()
    assert "1: invalid (bad_check_character)" in captured.out
    assert "2: valid" in captured.out
    assert "1101051949" not in captured.out + captured.err
