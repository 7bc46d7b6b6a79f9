"""Shared fixtures: databases (SQLite always; PostgreSQL when configured or answering locally).

PostgreSQL is used when ``TONGBAN_TEST_POSTGRES_URL`` is set (then it *must* work: a broken URL
fails the run instead of silently skipping) or when a server answers on 127.0.0.1:5432 with a
database ``test``. Either way the suite creates a throwaway database for the session and drops it
afterwards; each test gets an empty ``public`` schema in it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ENV_PG = "TONGBAN_TEST_POSTGRES_URL"
LOCAL_PG = "postgresql://127.0.0.1:5432/test"


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
