"""Shared fixtures: databases (SQLite always; PostgreSQL when configured or answering locally).

PostgreSQL is used when ``TONGBAN_TEST_POSTGRES_URL`` is set (then it *must* work: a broken URL
fails the run instead of silently skipping) or when a server answers on 127.0.0.1:5432 with a
database ``test``. Either way the suite creates a throwaway database for the session and drops it
afterwards; each test gets an empty ``public`` schema in it.

Every log record of the session — this process's, at DEBUG, from every logger, and those of every
``tongban`` process a test starts (through ``TONGBAN_LOG_FILE``) — is collected in one file, and
every personal value put in a record is remembered (``tests.factories.PERSONAL_VALUES``), as is
the message of every GatewayError raised, so that ``tests/test_zz_log_hygiene.py`` can check that
no personal value was ever logged or put in an error message.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from gateway import logs
from gateway.domain.records import ChildRecord
from gateway.errors import GatewayError
from tests import factories

ENV_PG = "TONGBAN_TEST_POSTGRES_URL"
LOCAL_PG = "postgresql://127.0.0.1:5432/test"
_LOG_SUMMARY = pytest.StashKey[str]()


@dataclass(frozen=True)
class SessionLog:
    """Where the session's logs went, and the message of every GatewayError it made."""

    path: Path
    exception_messages: set[str] = field(repr=False)  # never shown, even by --showlocals


@pytest.fixture(scope="session", autouse=True)
def session_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionLog]:
    """Collect the session's logs and personal values (see the module docstring)."""
    collected = SessionLog(tmp_path_factory.mktemp("logs") / "session.log", set())
    handler = logging.FileHandler(collected.path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logs.formatter(json=False, with_pid=True))
    handler.addFilter(logs.REDACTOR)  # counted: the hygiene check fails if it ever fires
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    saved = {name: os.environ.get(name) for name in (logs.ENV_FILE, logs.ENV_FORMAT)}
    os.environ[logs.ENV_FILE] = str(collected.path)  # every `tongban` process a test starts appends here
    os.environ.pop(logs.ENV_FORMAT, None)

    post_init, error_init = ChildRecord.__post_init__, GatewayError.__init__

    def remember_record(record: ChildRecord) -> None:
        post_init(record)
        factories.remember(record)

    def remember_error(error: GatewayError, *args: Any, **kwargs: Any) -> None:
        error_init(error, *args, **kwargs)
        collected.exception_messages.add(str(error))

    hooks = pytest.MonkeyPatch()
    hooks.setattr(ChildRecord, "__post_init__", remember_record)
    hooks.setattr(GatewayError, "__init__", remember_error)
    try:
        yield collected
    finally:
        hooks.undo()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


@pytest.fixture
def log_summary(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Give the terminal summary one line (the log-hygiene check reports what it scanned)."""

    def put(line: str) -> None:
        request.config.stash[_LOG_SUMMARY] = line

    return put


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = terminalreporter.config.stash.get(_LOG_SUMMARY, None)
    if line:
        terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def key_passphrase(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with a (test-only) key passphrase, as a node's service environment would."""
    value = "test-only passphrase, never used outside the test-suite"
    monkeypatch.setenv("TONGBAN_KEY_PASSPHRASE", value)
    monkeypatch.delenv("TONGBAN_KEY_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("TONGBAN_DATA_KEYRING_JSON", raising=False)
    # Seal test secrets with a cheap scrypt cost (the cost is stored in each file, so reading is
    # unaffected); production code has no such knob.
    monkeypatch.setattr("gateway.trust.keyfile.SCRYPT_N", 2**10)
    return value


def _admin_url() -> str | None:
    url = os.environ.get(ENV_PG)
    if url:
        return url
    try:
        with psycopg.connect(LOCAL_PG, connect_timeout=2):
            return LOCAL_PG
    except psycopg.Error:
        return None


def _with_db(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    admin = _admin_url()
    if admin is None:
        yield None
        return
    name = f"tongban_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_db(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _reset_pg(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    """An empty database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    if postgres_url is None:
        pytest.skip(f"no PostgreSQL: set {ENV_PG} or start the local server")
    _reset_pg(postgres_url)
    return postgres_url
