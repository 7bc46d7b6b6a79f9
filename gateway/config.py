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

Key and trust files have defaults inside the data directory (``keys/tls.key.pem``,
``keys/tls.crt.pem``, ``keys/signing.key.pem``, ``keys/encryption.key.pem``, ``trust/root.json``,
``trust/state.json``, ``trust/directory.json``); ``[trust] directory`` names where the signed
directory is published (a file path or an http(s) URL) and ``refresh_seconds`` how often to fetch.

``[exchange]`` says how envelopes travel (SPEC §4, §7; all optional)::

    [exchange]
    transport = "direct"        # or "relay": send every envelope through the relay node below
    relay = "cq-hub"            # the relay node senders push to (required when transport = "relay")
    relays = ["cq-hub"]         # relay nodes this node pulls from and accepts relayed envelopes from;
                                # empty (the default) accepts no relayed envelope at all
    serve_relay = false         # true: this node also serves the tongban.v1.Relay service
    poll_seconds = 1.0          # how often the delivery loop and the relay pullers look for work
    timeout_seconds = 60.0      # the longest one delivery stream may take
    lease_seconds = 300.0       # how long a delivery worker holds claimed outbox rows (covers one round)
    batch_size = 100            # envelopes per delivery stream (and per relay pull)
    retry_base_seconds = 5.0    # first back-off after a failed delivery, doubling each time ...
    retry_max_seconds = 1800.0  # ... up to this
    case_sync_seconds = 5.0     # how often the running node applies received case messages (and
                                # takes the custody actions they make due)
    roster_workers = 2          # processes that build a roster send's notices (0 or 1: none, all in
                                # the sending process; see gateway.exchange.roster_pages)

``[matching]`` sets the matcher's score thresholds (SPEC §5; all optional, defaults from
``gateway.matching.Thresholds``)::

    [matching]
    auto = 0.85                 # a fuzzy candidate links automatically at or above this score ...
    margin = 0.1                # ... and only if it beats the next-best candidate by this much
    review = 0.65               # below auto but at or above this: proposed for a person to review

``0 <= review <= auto <= 1`` and ``0 <= margin <= 1``, or the configuration is refused.

``[cases] supervisors`` names, per division prefix, the node that supervises the cases of that
province (督办, SPEC §6): a county sends each overdue step it answers for to the node of the
longest prefix covering its division; with none, the alert stays local (optional)::

    [cases.supervisors]
    "50" = "cq-supervision"     # the Chongqing operator's supervising node

``[county] listen`` is where the county API (``tongban.v1.County``: county systems, staff and operators
calling their own node with an API token, see :mod:`gateway.county`) listens. It is a listener of its
own because the node-to-node port admits only directory nodes over mutual TLS; by default it is
plaintext and therefore loopback only (the node refuses to start otherwise). The default
``127.0.0.1:0`` takes any free port, printed in the node's ready line; set a fixed one for county
systems to dial::

    [county]
    listen = "127.0.0.1:7302"

``[county] tls = true`` makes that listener mutual TLS with the node's own county CA (created under
the data directory on first use, separate from the directory's CAs): every caller presents a client
certificate the node issued (``tongban county cert issue``), revocable like a token (see
:mod:`gateway.county.certs`). Then it may listen beyond loopback (``listen = "0.0.0.0:7302"``), for
county systems on other hosts of the county's network.

``[web] listen`` is where the web inbox for county staff (:mod:`gateway.web`) listens; empty (the
default) serves none. Plain HTTP, so loopback only: staff reach it through the county's HTTPS reverse
proxy (its session cookie is ``Secure``; browsers send it to ``https://`` or to ``localhost``)::

    [web]
    listen = "127.0.0.1:7380"

``[metrics] listen`` is where the Prometheus endpoint (``/metrics``, :mod:`gateway.metrics`) listens;
empty (the default) serves none. It carries counts, ages and codes labelled with node ids, purposes,
reason codes and states only (never personal data), so it may listen beyond loopback for the
monitoring system to scrape; keep it off the peers' network (a firewall or network policy)::

    [metrics]
    listen = "0.0.0.0:7309"

A list from the environment is comma-separated (``TONGBAN_EXCHANGE_RELAYS=cq-hub,sc-hub``); a
boolean is ``true``/``false`` (also ``1``/``0``, ``yes``/``no``); a table is ``KEY=VALUE`` pairs
(``TONGBAN_CASES_SUPERVISORS=50=cq-supervision``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.matching import Thresholds

CONFIG_FILE = "node.toml"
_NODE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")

_SCHEMA: dict[str, dict[str, type]] = {
    "node": {"id": str, "division": str, "endpoint": str},
    "server": {"listen": str, "grace_seconds": float},
    "database": {"url": str},
    "keys": {
        "data_keyring": str,
        "tls_key": str,
        "tls_certificate": str,
        "signing_key": str,
        "encryption_key": str,
    },
    "trust": {"root": str, "directory": str, "refresh_seconds": float, "state": str, "last_good": str},
    "exchange": {
        "transport": str,
        "relay": str,
        "relays": list,
        "serve_relay": bool,
        "poll_seconds": float,
        "timeout_seconds": float,
        "lease_seconds": float,
        "batch_size": int,
        "retry_base_seconds": float,
        "retry_max_seconds": float,
        "case_sync_seconds": float,
        "roster_workers": int,
    },
    "matching": {"auto": float, "review": float, "margin": float},
    "cases": {"supervisors": dict},
    "county": {"listen": str, "tls": bool},
    "web": {"listen": str},
    "metrics": {"listen": str},
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "node": {"endpoint": ""},
    "server": {"listen": "127.0.0.1:7301", "grace_seconds": 5.0},
    "database": {"url": "sqlite:///node.db"},
    "keys": {
        "data_keyring": "data-keys.json",
        "tls_key": "keys/tls.key.pem",
        "tls_certificate": "keys/tls.crt.pem",
        "signing_key": "keys/signing.key.pem",
        "encryption_key": "keys/encryption.key.pem",
    },
    "trust": {
        "root": "trust/root.json",
        "directory": "",
        "refresh_seconds": 300.0,
        "state": "trust/state.json",
        "last_good": "trust/directory.json",
    },
    "exchange": {
        "transport": "direct",
        "relay": "",
        "relays": [],
        "serve_relay": False,
        "poll_seconds": 1.0,
        "timeout_seconds": 60.0,
        "lease_seconds": 300.0,
        "batch_size": 100,
        "retry_base_seconds": 5.0,
        "retry_max_seconds": 1800.0,
        "case_sync_seconds": 5.0,
        "roster_workers": 2,
    },
    "matching": {"auto": Thresholds.auto, "review": Thresholds.review, "margin": Thresholds.margin},
    "cases": {"supervisors": {}},
    "county": {"listen": "127.0.0.1:0", "tls": False},
    "web": {"listen": ""},
    "metrics": {"listen": ""},
}
TRANSPORTS = ("direct", "relay")
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class NodeConfig:
    """A node's configuration. Key and trust paths are absolute (resolved against the file's
    directory). ``endpoint`` is the address peers dial (defaults to ``listen``);
    ``directory_source`` is a file path or an http(s) URL, empty until the node is enrolled."""

    path: Path
    node_id: str
    division: str
    listen: str
    grace_seconds: float
    database_url: str
    data_keyring: Path
    endpoint: str = ""
    tls_key: Path = Path("keys/tls.key.pem")
    tls_certificate: Path = Path("keys/tls.crt.pem")
    signing_key: Path = Path("keys/signing.key.pem")
    encryption_key: Path = Path("keys/encryption.key.pem")
    trust_root: Path = Path("trust/root.json")
    directory_source: str = ""
    refresh_seconds: float = 300.0
    trust_state: Path = Path("trust/state.json")
    last_good_directory: Path = Path("trust/directory.json")
    exchange_transport: str = "direct"
    exchange_relay: str = ""
    exchange_relays: tuple[str, ...] = ()
    serve_relay: bool = False
    exchange_poll_seconds: float = 1.0
    exchange_timeout_seconds: float = 60.0
    exchange_lease_seconds: float = 300.0
    exchange_batch_size: int = 100
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 1800.0
    case_sync_seconds: float = 5.0
    roster_workers: int = 2  # processes that build a roster's notices; 0 or 1: in the sending process
    thresholds: Thresholds = field(default_factory=Thresholds)
    case_supervisors: Mapping[str, str] = field(default_factory=dict)  # division prefix -> supervising node
    county_listen: str = "127.0.0.1:0"  # the county API's own address (loopback; port 0: any free port)
    county_tls: bool = False  # the county API serves mutual TLS with the node's county CA (client certificates)
    web_listen: str = ""  # the web inbox's address (loopback); "" serves none
    metrics_listen: str = ""  # the Prometheus endpoint's address (HOST:PORT); "" serves none

    @property
    def enrolled(self) -> bool:
        """True once the node has a certificate and a pinned root: then it serves mutual TLS."""
        return self.tls_certificate.exists() and self.trust_root.exists()

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def validate_node_id(node_id: str) -> str:
    if not _NODE_ID.match(node_id):
        raise ConfigError("node id must be 3-63 characters of a-z, 0-9 and '-', starting alphanumeric")
    return node_id


def _from_env(var: str, text: str, kind: type) -> Any:
    """An environment override as a value of ``kind`` (lists comma-separated, booleans by word)."""
    if kind is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind is dict:  # "50=cq-supervision,51=sc-supervision"
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(f"{var} must be KEY=VALUE pairs separated by commas")
        return {k.strip(): v.strip() for k, v in pairs}
    if kind is bool:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{var} must be true or false")
        return word in _TRUE
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{var} must be a {kind.__name__}") from None


def _exchange(path: Path, ex: dict[str, Any]) -> dict[str, Any]:
    """Validate ``[exchange]`` (fail closed: an unknown transport or a relay without a node id is an
    error, never a fallback to direct delivery)."""
    if ex["transport"] not in TRANSPORTS:
        raise ConfigError(f"{path}: exchange.transport must be one of {', '.join(TRANSPORTS)}")
    if ex["transport"] == "relay" and not ex["relay"]:
        raise ConfigError(f'{path}: exchange.transport = "relay" needs exchange.relay (the relay\'s node id)')
    if ex["relay"]:
        validate_node_id(ex["relay"])
    relays = ex["relays"]
    if not all(isinstance(r, str) for r in relays):
        raise ConfigError(f"{path}: exchange.relays must be a list of node ids")
    for relay in relays:
        validate_node_id(relay)
    if len(set(relays)) != len(relays):
        raise ConfigError(f"{path}: exchange.relays names a node twice")
    for key in ("poll_seconds", "timeout_seconds", "lease_seconds", "retry_base_seconds", "case_sync_seconds"):
        if ex[key] <= 0:
            raise ConfigError(f"{path}: exchange.{key} must be positive")
    if ex["retry_max_seconds"] < ex["retry_base_seconds"]:
        raise ConfigError(f"{path}: exchange.retry_max_seconds must be at least retry_base_seconds")
    if isinstance(ex["batch_size"], bool) or ex["batch_size"] < 1:
        raise ConfigError(f"{path}: exchange.batch_size must be a positive integer")
    if isinstance(ex["roster_workers"], bool) or not 0 <= ex["roster_workers"] <= 64:
        raise ConfigError(f"{path}: exchange.roster_workers must be an integer from 0 to 64")
    return {
        "exchange_transport": ex["transport"],
        "exchange_relay": ex["relay"],
        "exchange_relays": tuple(relays),
        "serve_relay": ex["serve_relay"],
        "exchange_poll_seconds": ex["poll_seconds"],
        "exchange_timeout_seconds": ex["timeout_seconds"],
        "exchange_lease_seconds": ex["lease_seconds"],
        "exchange_batch_size": ex["batch_size"],
        "retry_base_seconds": ex["retry_base_seconds"],
        "retry_max_seconds": ex["retry_max_seconds"],
        "case_sync_seconds": ex["case_sync_seconds"],
        "roster_workers": ex["roster_workers"],
    }


def _matching(path: Path, m: dict[str, Any]) -> Thresholds:
    """Validate ``[matching]``: the thresholds must be ordered (``Thresholds`` says how)."""
    try:
        return Thresholds(auto=m["auto"], review=m["review"], margin=m["margin"])
    except ValueError:
        raise ConfigError(f"{path}: matching needs 0 <= review <= auto <= 1 and 0 <= margin <= 1") from None


def supervisor_for(supervisors: Mapping[str, str], division: str) -> str | None:
    """The node that supervises ``division`` under ``[cases] supervisors``: the entry with the
    longest prefix covering it, or ``None`` when none does."""
    covering = [p for p in supervisors if division.startswith(p)]
    return supervisors[max(covering, key=len)] if covering else None


def _supervisors(path: Path, table: dict[str, Any]) -> dict[str, str]:
    """Validate ``[cases] supervisors``: division prefixes (1-6 digits) to node ids (fail closed)."""
    out: dict[str, str] = {}
    for prefix, node in table.items():
        if not (isinstance(prefix, str) and 1 <= len(prefix) <= 6 and prefix.isascii() and prefix.isdigit()):
            raise ConfigError(f"{path}: cases.supervisors keys are division prefixes of 1-6 digits")
        if not isinstance(node, str):
            raise ConfigError(f"{path}: cases.supervisors.{prefix} must be a node id")
        out[prefix] = validate_node_id(node)
    return out


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
                merged[section][key] = _from_env(var, env[var], kind)
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
    kp, trust = merged["keys"], merged["trust"]
    source = trust["directory"]
    if source and "://" not in source:
        source = str(base / source)
    if trust["refresh_seconds"] <= 0:
        raise ConfigError("trust.refresh_seconds must be positive")
    metrics_listen = merged["metrics"]["listen"]
    if metrics_listen and not re.fullmatch(r"[^\s]+:\d{1,5}", metrics_listen):
        raise ConfigError(f"{path}: metrics.listen must be HOST:PORT, or empty for no metrics endpoint")
    return NodeConfig(
        path=path.resolve(),
        node_id=validate_node_id(merged["node"]["id"]),
        division=division,
        listen=merged["server"]["listen"],
        grace_seconds=merged["server"]["grace_seconds"],
        database_url=_resolve_sqlite(merged["database"]["url"], base),
        data_keyring=base / kp["data_keyring"],
        endpoint=merged["node"]["endpoint"] or merged["server"]["listen"],
        tls_key=base / kp["tls_key"],
        tls_certificate=base / kp["tls_certificate"],
        signing_key=base / kp["signing_key"],
        encryption_key=base / kp["encryption_key"],
        trust_root=base / trust["root"],
        directory_source=source,
        refresh_seconds=trust["refresh_seconds"],
        trust_state=base / trust["state"],
        last_good_directory=base / trust["last_good"],
        thresholds=_matching(path, merged["matching"]),
        case_supervisors=_supervisors(path, merged["cases"]["supervisors"]),
        county_listen=merged["county"]["listen"],
        county_tls=merged["county"]["tls"],
        web_listen=merged["web"]["listen"],
        metrics_listen=metrics_listen,
        **_exchange(path, merged["exchange"]),
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
