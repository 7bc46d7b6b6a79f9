"""The trust store: the I/O edge around the pure verifier (:mod:`gateway.trust.verifier`).

The verifier judges bytes at an explicit time; this module decides *which* bytes and *when*, and
remembers the outcome on disk. It keeps three files (paths from ``[trust]`` in ``node.toml``):

* the **pinned root** (``trust/root.json``): the signed root the node was installed with. It is
  read only while no saved state exists;
* the **saved state** (``trust/state.json``): :class:`~gateway.trust.verifier.TrustState` as JSON —
  the trusted root after any rotations and the directory and part versions already accepted — so
  that rollback protection survives a restart;
* the **last good bundle** (``trust/directory.json``): the exact bytes of the last accepted
  directory bundle, so a restarted node has its directory even while the publisher is down.

Life cycle:

1. **Open** (the constructor). State from the saved state (its root is re-verified) or, if there is
   none, from the pinned root (which must not be expired). Then the last good bundle, if any, is
   accepted *again, as of now*: a node keeps working through a publisher outage only until that
   directory's expiry. A last good bundle that is refused (expired, or anything else) leaves the
   store without a directory — :meth:`TrustStore.current` raises until a refresh succeeds. A saved
   state that cannot be read is an error, never a silent fallback to the pinned root (that would
   give up rollback protection).
2. **Refresh** (:meth:`TrustStore.refresh`). Fetch the bundle from the source (a file path, a
   ``file://`` URL, or an ``http(s)://`` URL with a timeout and a size limit), accept it against
   the current state, and only then persist — the bundle first, then the state — and swap the
   in-memory directory. Any failure changes nothing, logs one warning line with the error code,
   and is re-raised (so a caller learns why; the background refresher just logs and retries).
   The write order matters: a crash between the two writes leaves a *newer* bundle beside an
   *older* state, which the next open accepts; the other order would leave an older bundle that
   the newer state refuses as a rollback.
3. **Serve**: :meth:`TrustStore.current` hands the verified, unexpired directory to the
   interceptor and to clients; :meth:`TrustStore.ca_bundle_pem` gives the TLS layer the provincial
   CAs of the latest accepted directory.
4. **Background refresh**: :meth:`TrustStore.start_refresher` runs :meth:`refresh` every
   ``refresh_seconds`` (±10 % jitter, so a province's nodes do not all hit the publisher at once)
   until :meth:`TrustStore.stop_refresher`.

All methods are thread-safe: refreshes are serialised, and readers see either the old or the new
(state, directory) pair, never a mixture.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import random
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import NodeConfig
from gateway.errors import (
    ConfigError,
    DirectoryFetchFailed,
    DirectoryUnavailable,
    GatewayError,
    MalformedDocument,
    StorageError,
    TrustError,
)
from gateway.trust.documents import format_time
from gateway.trust.verifier import Directory, TrustState

log = logging.getLogger("tongban.trust")

Clock = Callable[[], datetime]

MAX_BUNDLE_BYTES = 32 * 1024 * 1024  # a directory of every county in China is a few MB; refuse more
DEFAULT_FETCH_TIMEOUT = 10.0
_JITTER = 0.1


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- fetching ------------------------------------------------------------------------------------


def _scheme(source: str) -> str:
    return urllib.parse.urlsplit(source).scheme.lower() if "://" in source else ""


def check_source(source: str) -> str:
    """Return ``source`` if it is a supported directory source ('' = none); else ``ConfigError``."""
    if _scheme(source) not in {"", "file", "http", "https"}:
        raise ConfigError(f"trust.directory must be a file path or a file, http or https URL, not {source!r}")
    return source


def describe_source(source: str) -> str:
    """The source for logs: a URL without user, password, query or fragment."""
    if not _scheme(source):
        return source
    parts = urllib.parse.urlsplit(source)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def fetch_bundle(source: str, *, timeout: float = DEFAULT_FETCH_TIMEOUT, limit: int = MAX_BUNDLE_BYTES) -> bytes:
    """Read the bundle bytes from ``source``; raise ``DirectoryFetchFailed`` (never anything else
    for a source that cannot be read). Nothing is verified here: the bytes are untrusted until
    :meth:`TrustState.accept` says otherwise, so plain HTTP is acceptable transport."""
    scheme = _scheme(check_source(source))
    where = describe_source(source)
    if scheme in {"http", "https"}:
        request = urllib.request.Request(source, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
                data: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            raise DirectoryFetchFailed(f"{where}: HTTP {exc.code}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DirectoryFetchFailed(f"{where}: {type(reason).__name__}: {reason}") from None
    else:
        path = (
            Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path)) if scheme == "file" else Path(source)
        )
        try:
            with path.open("rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            raise DirectoryFetchFailed(f"{where}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise DirectoryFetchFailed(f"{where}: larger than {limit} bytes")
    return data


# --- persistence ---------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old or the new file,
    never a partial one: write a temporary file beside it, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _state_bytes(state: TrustState) -> bytes:
    return json.dumps(state.to_json(), indent=1, sort_keys=True).encode("utf-8") + b"\n"


def _read(path: Path, what: str) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None


# --- the store -----------------------------------------------------------------------------------


class TrustStore:
    """A node's trusted state and directory, on disk and in memory. See the module docstring."""

    def __init__(
        self,
        *,
        pinned_root: Path,
        state_path: Path,
        last_good_path: Path,
        source: str = "",
        refresh_seconds: float = 300.0,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        clock: Clock = utc_now,
    ) -> None:
        """Open the store (reads files; see "Open" in the module docstring).

        Raises ``ConfigError`` if neither a saved state nor the pinned root can be read or the
        source is not supported, ``MalformedDocument`` if the saved state is damaged, and the
        verifier's ``TrustError`` if the root it holds does not verify (or, for the pinned root,
        has expired). A refused last good bundle is *not* raised: it is logged and remembered in
        :attr:`last_error`.
        """
        if refresh_seconds <= 0:
            raise ConfigError("trust.refresh_seconds must be positive")
        self.pinned_root = pinned_root
        self.state_path = state_path
        self.last_good_path = last_good_path
        self.source = check_source(source)
        self.refresh_seconds = refresh_seconds
        self.fetch_timeout = fetch_timeout
        self.clock = clock
        self._lock = threading.Lock()  # guards the (state, directory, error) triple
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._directory: Directory | None = None
        self._bundle_sha256: str | None = None
        self.last_error: GatewayError | None = None
        self._state = self._load_state(clock())
        self._load_last_good(clock())

    @classmethod
    def from_config(cls, cfg: NodeConfig, *, clock: Clock = utc_now) -> TrustStore:
        return cls(
            pinned_root=cfg.trust_root,
            state_path=cfg.trust_state,
            last_good_path=cfg.last_good_directory,
            source=cfg.directory_source,
            refresh_seconds=cfg.refresh_seconds,
            clock=clock,
        )

    # --- open --------------------------------------------------------------------------------------

    def _load_state(self, now: datetime) -> TrustState:
        saved = _read(self.state_path, "saved trust state")
        if saved is not None:
            try:
                doc = json.loads(saved)
            except (ValueError, UnicodeDecodeError):
                raise MalformedDocument(f"the saved trust state {self.state_path} is not JSON") from None
            if not isinstance(doc, dict):
                raise MalformedDocument(f"the saved trust state {self.state_path} is not a JSON object")
            return TrustState.from_json(doc)
        pinned = _read(self.pinned_root, "pinned root")
        if pinned is None:
            raise ConfigError(f"no pinned root at {self.pinned_root}: the node is not enrolled")
        return TrustState.from_pinned_root(pinned, now)

    def _load_last_good(self, now: datetime) -> None:
        bundle = _read(self.last_good_path, "last good directory")
        if bundle is None:
            return
        try:
            state, directory = self._state.accept(bundle, now)
        except TrustError as exc:
            self.last_error = exc
            log.warning("last good directory refused (%s): %s", exc.code, exc)
            return
        if _state_bytes(state) != _state_bytes(self._state):
            self._persist_state(state)
        self._state, self._directory = state, directory
        self._bundle_sha256 = hashlib.sha256(bundle).hexdigest()
        log.info("loaded last good directory v%d (expires %s)", directory.version, format_time(directory.expires))

    def _persist_state(self, state: TrustState) -> None:
        try:
            write_atomic(self.state_path, _state_bytes(state))
        except OSError as exc:
            raise StorageError(f"cannot save the trust state {self.state_path}: {exc.strerror}") from None

    # --- reading -----------------------------------------------------------------------------------

    @property
    def state(self) -> TrustState:
        with self._lock:
            return self._state

    def current(self, now: datetime | None = None) -> Directory:
        """The verified directory, if it has not expired at ``now`` (default: the clock).

        Raises ``DirectoryUnavailable`` if no directory was ever accepted (or the last good one
        was refused; the detail names why) and ``DocumentExpired`` if the one held has expired.
        """
        with self._lock:
            directory, error = self._directory, self.last_error
        if directory is None:
            reason = f"last attempt failed with {error.code}" if error is not None else "none was ever accepted"
            raise DirectoryUnavailable(reason)
        directory.check_fresh(now or self.clock())
        return directory

    def ca_bundle_pem(self) -> bytes:
        """The provincial CA certificates of the latest accepted directory, *even if it has since
        expired*: TLS may still complete, and the interceptor then answers UNAVAILABLE with a
        reason instead of the peer seeing an anonymous handshake failure."""
        with self._lock:
            directory = self._directory
        if directory is None:
            raise DirectoryUnavailable("no directory has been accepted")
        return directory.ca_bundle_pem()

    # --- refreshing --------------------------------------------------------------------------------

    def refresh(self, now: datetime | None = None) -> Directory:
        """Fetch, verify and adopt the bundle from the source; return the new directory.

        In order: fetch (``DirectoryFetchFailed``; ``DirectoryUnavailable`` if no source is
        configured); :meth:`TrustState.accept` at ``now`` (any ``TrustError`` of the verifier:
        rollback, expiry, signatures, prefixes, certificates …); persist the bundle bytes, then the
        new state (``StorageError``); swap the in-memory state and directory. On any failure the
        last good directory stays in force, one warning line with the error code is logged, and
        the error is re-raised.
        """
        with self._refresh_lock:
            try:
                return self._refresh(now or self.clock())
            except GatewayError as exc:
                with self._lock:
                    self.last_error = exc
                    held = f"v{self._directory.version}" if self._directory is not None else "none"
                log.warning("directory refresh failed (%s): %s; keeping last good directory (%s)", exc.code, exc, held)
                raise

    def _refresh(self, now: datetime) -> Directory:
        if not self.source:
            raise DirectoryUnavailable("no directory source is configured (trust.directory)")
        bundle = fetch_bundle(self.source, timeout=self.fetch_timeout)
        with self._lock:
            old_state, old_directory = self._state, self._directory
        state, directory = old_state.accept(bundle, now)
        digest = hashlib.sha256(bundle).hexdigest()
        if digest != self._bundle_sha256:
            try:
                write_atomic(self.last_good_path, bundle)
            except OSError as exc:
                raise StorageError(f"cannot save the directory {self.last_good_path}: {exc.strerror}") from None
        if _state_bytes(state) != _state_bytes(old_state):
            self._persist_state(state)
        with self._lock:
            self._state, self._directory, self._bundle_sha256 = state, directory, digest
            self.last_error = None
        if old_directory is None or old_directory.version != directory.version:
            log.info("accepted directory v%d (expires %s)", directory.version, format_time(directory.expires))
        return directory

    def ensure_usable(self, now: datetime | None = None) -> Directory:
        """At start-up: refresh once if a source is configured (so a restart picks up revocations
        published while the node was down), then return :meth:`current` or raise its error. A
        failed refresh is not fatal while the last good directory is still valid."""
        if self.source:
            with contextlib.suppress(GatewayError):  # logged by refresh; the last good may still do
                return self.refresh(now)
        return self.current(now)

    # --- background refresher ------------------------------------------------------------------------

    def next_delay(self) -> float:
        return self.refresh_seconds * random.uniform(1 - _JITTER, 1 + _JITTER)

    def start_refresher(self) -> None:
        """Start the background refresh thread (a no-op without a source, or if it is running)."""
        if not self.source:
            log.warning("no directory source configured: the directory is never refreshed and stops at its expiry")
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tongban-trust-refresh", daemon=True)
        self._thread.start()

    def stop_refresher(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.next_delay()):
            try:
                self.refresh()
            except GatewayError:
                pass  # logged by refresh; the last good directory stays until its expiry
            except Exception:  # the refresher must outlive a bug, or revocations stop arriving
                log.exception("directory refresh crashed; retrying at the next interval")
