"""gateway/logs.py: one logging set-up, the shared log file, JSON lines, the ID-number redaction filter.

Planted ID numbers here never go through a logger that reaches the root: the session's own log is
scanned for them at the end (tests/test_zz_log_hygiene.py).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from gateway import logs
from gateway.cli import main
from gateway.domain import idnumber
from gateway.errors import ConfigError

NUMBER = idnumber.make("500157", date(2015, 3, 9), 12)
FULL_WIDTH = NUMBER.translate(str.maketrans("0123456789", "０１２３４５６７８９"))


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad value {NUMBER}")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("tongban.test", logging.INFO, __file__, 1, msg, args or None, exc_info)
    record.__dict__.update(extra)
    return record


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, put back as it was (handlers, level, alembic's level) afterwards."""
    logger = logging.getLogger()
    handlers, level, alembic = list(logger.handlers), logger.level, logging.getLogger("alembic").level
    try:
        yield logger
    finally:
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
        logging.getLogger("alembic").setLevel(alembic)


# --- the filter ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(f"row 3: {NUMBER}", f"row 3: {logs.REDACTED_ID}", id="ascii"),
        pytest.param(f"id_number='{FULL_WIDTH}'", f"id_number='{logs.REDACTED_ID}'", id="full_width"),
        pytest.param("x 11010519491231002x.", f"x {logs.REDACTED_ID}.", id="lower_case_x"),
        pytest.param("身份证号11010519491231002Ｘ有误", f"身份证号{logs.REDACTED_ID}有误", id="inside_chinese_text"),
        pytest.param(f"{NUMBER[:17]}0", f"{logs.REDACTED_ID}", id="shaped_but_invalid"),
        pytest.param(f"nanoseconds 1{NUMBER[:17]}0", f"nanoseconds 1{NUMBER[:17]}0", id="nineteen_digits"),
        pytest.param(f"digest {NUMBER}ab", f"digest {NUMBER}ab", id="inside_hex"),
        pytest.param(f"{NUMBER[:16]} seventeen", f"{NUMBER[:16]} seventeen", id="too_short"),
    ],
)
def test_the_filter_redacts_anything_shaped_like_an_id_number(message: str, expected: str) -> None:
    redactor = logs.RedactIds()
    record = _record(message)
    assert redactor.filter(record) is True
    assert record.getMessage() == expected
    assert redactor.count == (message != expected)


def test_the_filter_redacts_arguments_exceptions_and_extra_fields() -> None:
    redactor = logs.RedactIds()
    record = _record("row %d: %s refused", 7, NUMBER, exc=True, field=FULL_WIDTH, attempts=3)
    redactor.filter(record)
    text = logging.Formatter().format(record)
    assert record.getMessage() == f"row 7: {logs.REDACTED_ID} refused"
    assert NUMBER not in text
    assert f"bad value {logs.REDACTED_ID}" in text
    assert (record.field, record.attempts) == (logs.REDACTED_ID, 3)
    assert redactor.count == 3


def test_the_filter_leaves_clean_records_alone() -> None:
    redactor = logs.RedactIds()
    record = _record("message %s delivered to %s (attempt %d)", "msg-0001", "sc-nanbu", 2)
    redactor.filter(record)
    assert (record.msg, record.args) == ("message %s delivered to %s (attempt %d)", ("msg-0001", "sc-nanbu", 2))
    assert redactor.count == 0


# --- JSON lines ------------------------------------------------------------------------------------


def test_json_lines_hold_time_level_logger_pid_message_and_extra_fields() -> None:
    record = _record("refused %s", "envelope", peer="sc-nanbu", code="bad_signature")
    line = logs.JsonFormatter().format(record)
    entry = json.loads(line)
    assert list(entry)[:5] == ["time", "level", "logger", "pid", "message"]
    assert entry["time"].endswith("+00:00")
    assert (entry["level"], entry["logger"], entry["pid"], entry["message"]) == (
        "INFO",
        "tongban.test",
        os.getpid(),
        "refused envelope",
    )
    assert (entry["peer"], entry["code"]) == ("sc-nanbu", "bad_signature")


def test_a_json_line_is_one_line_even_with_a_traceback() -> None:
    redactor = logs.RedactIds()
    record = _record("multi\nline 四川省", exc=True, when=date(2026, 11, 23))
    redactor.filter(record)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "multi\nline 四川省"
    assert "ValueError: bad value [redacted-id]" in entry["exception"]
    assert entry["when"] == "2026-11-23"


# --- configure -------------------------------------------------------------------------------------


def test_configure_appends_to_the_file_with_the_process_id(root: logging.Logger, tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_text("an earlier line\n", encoding="utf-8")
    logs.configure(False, file=path)
    logs.configure(False, file=path)  # again: replaces, never doubles
    logging.getLogger("tongban.test").info("node %s started", "cq-liangjiang")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "an earlier line"
    assert len(lines) == 2
    assert f" [{os.getpid()}] INFO tongban.test node cq-liangjiang started" in lines[1]
    assert logging.getLogger("alembic").level == logging.WARNING


def test_configure_json_from_the_environment(
    root: logging.Logger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.jsonl"
    monkeypatch.setenv(logs.ENV_FILE, str(path))
    monkeypatch.setenv(logs.ENV_FORMAT, "JSON")
    logs.configure(False)
    logging.getLogger("tongban.test").warning("refresh failed (%s)", "directory_fetch_failed")
    [line] = path.read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["message"]) == ("WARNING", "refresh failed (directory_fetch_failed)")


def test_configure_on_a_bare_root_logs_to_stderr_at_the_chosen_level(
    root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(logs.ENV_FILE)
    saved = list(root.handlers)
    for handler in saved:  # as in a fresh process: nothing handles the root logger yet
        root.removeHandler(handler)
    logs.configure(True)
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    assert root.level == logging.DEBUG
    assert logs.REDACTOR in handler.filters
    handler.stream = io.StringIO()
    logging.getLogger("tongban.test").debug("row %d refused", 4)
    assert handler.stream.getvalue().endswith(" DEBUG tongban.test row 4 refused\n")
    logs.configure(False)
    [handler] = root.handlers
    assert root.level == logging.INFO


def test_configure_under_a_harness_keeps_its_handlers_and_level(root: logging.Logger) -> None:
    before, level = list(root.handlers), root.level
    logs.configure(True)
    assert (root.handlers, root.level) == (before, level)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param(logs.ENV_FORMAT, "xml", id="unknown_format"),
        pytest.param(logs.ENV_FILE, "/nonexistent-dir/tongban.log", id="unopenable_file"),
    ],
)
def test_bad_log_settings_are_configuration_errors(
    root: logging.Logger, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError):
        logs.configure(False)
    assert main(["divisions", "show", "500157"]) == 78


@pytest.mark.slow
def test_a_tongban_process_writes_json_lines_to_the_log_file(tmp_path: Path) -> None:
    path = tmp_path / "process.jsonl"
    env = {**os.environ, logs.ENV_FILE: str(path), logs.ENV_FORMAT: "json"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "-v",
            "node",
            "init",
            str(tmp_path / "n"),
            "--id",
            "cq-test",
            "--division",
            "500157",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert entries, "the process logged nothing to the file"
    [pid] = {e["pid"] for e in entries}
    assert pid != os.getpid()
    assert any(e["logger"].startswith("alembic") for e in entries)
    assert len(done.stderr.strip().splitlines()) >= len(entries)  # the same records on stderr, as text
