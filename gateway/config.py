"""Node configuration: one TOML file, with environment overrides.

Every setting ``[section] key`` can be overridden by the environment variable
``TONGBAN_<SECTION>_<KEY>`` (upper case), e.g. ``TONGBAN_SERVER_LISTEN=127.0.0.1:7401`` or
``TONGBAN_DATABASE_URL=postgresql://…``. Relative paths are relative to the directory of the
configuration file. Unknown sections or keys are errors (a typo must not silently fall back to a
default).

Example (what ``tongban node init`` writes)::

    [node]
    id = "cq-500157"
    division = "500157"

    [server]
    listen = "127.0.0.1:7301"

    [database]
    url = "sqlite:///node.db"

    [keys]
    data_keyring = "data-keys.json"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

CONFIG_FILE = "node.toml"
_NODE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")

_SCHEMA: dict[str, dict[str, type]] = {
    "node": {"id": str, "division": str},
    "server": {"listen": str, "grace_seconds": float},
    "database": {"url": str},
    "keys": {"data_keyring": str},
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {"listen": "127.0.0.1:7301", "grace_seconds": 5.0},
    "database": {"url": "sqlite:///node.db"},
    "keys": {"data_keyring": "data-keys.json"},
}


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    node_id: str
    division: str
    listen: str
    grace_seconds: float
    database_url: str
    data_keyring: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def validate_node_id(node_id: str) -> str:
    if not _NODE_ID.match(node_id):
        raise ConfigError("node id must be 3-63 characters of a-z, 0-9 and '-', starting alphanumeric")
    return node_id


def _resolve_sqlite(url: str, base: Path) -> str:
    """Make ``sqlite:///relative.db`` relative to the config directory, not the working dir."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        return prefix + str((base / url.removeprefix(prefix)).resolve())
    return url


def load(path: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read ``path``, apply ``TONGBAN_*`` overrides, validate, and return the configuration."""
    env = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None

    merged: dict[str, dict[str, Any]] = {s: dict(_DEFAULTS.get(s, {})) for s in _SCHEMA}
    for section, values in raw.items():
        if section not in _SCHEMA or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        for key, value in values.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"{path}: unknown key {section}.{key}")
            merged[section][key] = value
    for section, keys in _SCHEMA.items():
        for key, kind in keys.items():
            var = f"TONGBAN_{section}_{key}".upper()
            if var in env:
                try:
                    merged[section][key] = kind(env[var])
                except ValueError:
                    raise ConfigError(f"{var} must be a {kind.__name__}") from None
            if key not in merged[section]:
                raise ConfigError(f"{path}: missing {section}.{key}")
            value = merged[section][key]
            if kind is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, kind):
                raise ConfigError(f"{path}: {section}.{key} must be a {kind.__name__}")
            merged[section][key] = value

    base = path.resolve().parent
    division = merged["node"]["division"]
    if len(division) != 6 or not division.isdigit():
        raise ConfigError("node.division must be a six-digit division code")
    return NodeConfig(
        path=path.resolve(),
        node_id=validate_node_id(merged["node"]["id"]),
        division=division,
        listen=merged["server"]["listen"],
        grace_seconds=merged["server"]["grace_seconds"],
        database_url=_resolve_sqlite(merged["database"]["url"], base),
        data_keyring=base / merged["keys"]["data_keyring"],
    )


def render(node_id: str, division: str, listen: str, database_url: str) -> str:
    """The TOML ``tongban node init`` writes."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (
        "# Tongban node configuration. Every key can be overridden by TONGBAN_<SECTION>_<KEY>.\n"
        f"[node]\nid = {q(node_id)}\ndivision = {q(division)}\n\n"
        f"[server]\nlisten = {q(listen)}\ngrace_seconds = 5.0\n\n"
        f"[database]\nurl = {q(database_url)}\n\n"
        '[keys]\ndata_keyring = "data-keys.json"\n'
    )
