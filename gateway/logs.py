"""Logging for every ``tongban`` process, set up in one place.

:func:`configure` is called once by the command line (``gateway.cli.main``). It installs:

* a handler on standard error (``time level logger message``), unless something else — a test
  harness — already handles the root logger, as :func:`logging.basicConfig` would;
* with ``TONGBAN_LOG_FILE=PATH`` (or ``file=``), a second handler appending every record to that
  file as well, each line carrying the process id, so that the logs of several processes (a demo's
  nodes, a test-suite's servers) can be collected in one place;
* with ``TONGBAN_LOG_FORMAT=json`` (or ``json=True``), one JSON object per line instead of text:
  ``time``, ``level``, ``logger``, ``pid``, ``message``, then any ``extra={…}`` fields of the call,
  and ``exception`` when there is one;
* **request ids**: a record made while a gRPC call (node-to-node or county API) or a web inbox
  request is handled carries that request's id as ``request_id`` (a JSON field; `` request=<id>``
  at the end of a text line). The id is the caller's ``x-request-id`` when it sends a well-formed
  one, else one the node makes up, and is sent back (gRPC trailing metadata ``x-request-id``, HTTP
  header ``X-Request-Id``), so one request's lines can be found across a county system's logs and
  the node's. See :data:`REQUEST_ID` and :func:`request_id_from`.

Logs never contain personal data (SPEC §7): code logs identifiers, counts and error codes, never
names, ID numbers, birth dates or phones. :class:`RedactIds` is the last line of defence on every
handler :func:`configure` installs: anything shaped like a resident ID number (17 digits and a
digit or ``X``, ASCII or full-width) in a record's message, arguments, exception text or extra
fields is replaced by ``[redacted-id]`` and counted. It should never fire; the test-suite fails
if it does.
"""

from __future__ import annotations

import contextvars
import json as jsonlib
import logging
import os
import re
import secrets
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

ENV_FILE = "TONGBAN_LOG_FILE"
ENV_FORMAT = "TONGBAN_LOG_FORMAT"
FORMATS = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The file may be shared by several processes: each line says which one wrote it.
FILE_TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s %(message)s"

REDACTED_ID = "[redacted-id]"

# 17 digits then a digit or X, ASCII or full-width, not inside a longer run of digits (nor followed
# by a letter, so that a run of digits inside a hexadecimal digest is not taken for one).
ID_SHAPED = re.compile(r"(?<![0-9０-９])[0-9０-９]{17}[0-9０-９XxＸｘ](?![0-9０-９A-Za-zＡ-Ｚａ-ｚ])")

_HANDLER_PREFIX = "tongban."
# Attributes every LogRecord has; anything else on a record came from ``extra={…}``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


# --- request ids ------------------------------------------------------------------------------------

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tongban_request_id", default=None)
"""The id of the request being handled in this context (set by the gRPC servers' and the web inbox's
request handling); every log record made meanwhile carries it as ``request_id``."""

REQUEST_ID_HEADER = "x-request-id"
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_from(offered: str | None) -> str:
    """The id of a new request: the caller's, if it offered a well-formed one (1–64 letters,
    digits, ``. _ : -`` — never anything that could smuggle text into a log line), else a fresh
    random one (16 hex digits)."""
    if offered is not None and _WELL_FORMED_ID.fullmatch(offered) and not ID_SHAPED.search(offered):
        return offered
    return secrets.token_hex(8)


def _stamp_request_id(factory: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        return record

    make.tongban_request_ids = True  # type: ignore[attr-defined]
    return make


# Every record, whichever handler (ours, a test harness's) receives it, so installed once at import.
if not getattr(logging.getLogRecordFactory(), "tongban_request_ids", False):
    logging.setLogRecordFactory(_stamp_request_id(logging.getLogRecordFactory()))


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={…}`` fields of a record, in the order they were given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class RedactIds(logging.Filter):
    """Replace anything shaped like a resident ID number with ``[redacted-id]``; count how many.

    Attached to a handler, it rewrites the record in place (message with its arguments merged,
    exception and stack text, string and integer extra fields), so every handler that sees the
    record after it sees the redacted version. Never drops a record.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._count = 0
        self._formatter = logging.Formatter()

    @property
    def count(self) -> int:
        """How many ID-shaped strings this filter has replaced since it was made."""
        return self._count

    def filter(self, record: logging.LogRecord) -> bool:
        hits = 0
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: the handler reports it as logging does
            message = None
        if message is not None:
            redacted, n = ID_SHAPED.subn(REDACTED_ID, message)
            if n:
                record.msg, record.args = redacted, None
                hits += n
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text, n = ID_SHAPED.subn(REDACTED_ID, record.exc_text)
            hits += n
        if record.stack_info:
            record.stack_info, n = ID_SHAPED.subn(REDACTED_ID, record.stack_info)
            hits += n
        for key, value in extra_fields(record).items():
            if isinstance(value, str | int) and not isinstance(value, bool):
                redacted, n = ID_SHAPED.subn(REDACTED_ID, str(value))
                if n:
                    setattr(record, key, redacted)
                    hits += n
        if hits:
            with self._lock:
                self._count += hits
        return True


# The filter every handler of :func:`configure` shares: ``REDACTOR.count`` is the process's total.
REDACTOR = RedactIds()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, pid, message, extra fields,
    exception. Values JSON cannot hold are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The text line, with `` request=<id>`` at the end while a request is handled."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} request={request_id}" if request_id else line


def formatter(*, json: bool, with_pid: bool) -> logging.Formatter:
    """The formatter :func:`configure` uses: JSON, or text (with the process id for files)."""
    if json:
        return JsonFormatter()
    return TextFormatter(FILE_TEXT_FORMAT if with_pid else TEXT_FORMAT)


def _format_from_env() -> bool:
    value = os.environ.get(ENV_FORMAT, "").strip().lower()
    if value and value not in FORMATS:
        raise ConfigError(f"{ENV_FORMAT} must be one of {', '.join(FORMATS)}")
    return value == "json"


def configure(verbose: bool, *, json: bool = False, file: Path | None = None) -> None:
    """Set up the root logger for a ``tongban`` process (see the module docstring).

    ``verbose`` logs at DEBUG instead of INFO (and lets alembic's migration chatter through).
    ``json`` or ``TONGBAN_LOG_FORMAT=json`` selects JSON lines; ``file`` or ``TONGBAN_LOG_FILE``
    adds a file the records are appended to. Calling it again replaces what it installed before.
    When the root logger already has other handlers (a test harness), its level and handlers are
    left alone and only the file is added.
    Raises :class:`~gateway.errors.ConfigError` for an unknown format or a file it cannot open.
    """
    use_json = json or _format_from_env()
    if file is None and os.environ.get(ENV_FILE):
        file = Path(os.environ[ENV_FILE])
    root = logging.getLogger()
    for old in [h for h in root.handlers if (h.get_name() or "").startswith(_HANDLER_PREFIX)]:
        root.removeHandler(old)
        old.close()
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # As with basicConfig, a harness that already handles the root logger (a test-suite running
    # the command in-process) keeps its handlers and level; only the log file is added.
    if not root.handlers:
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
        stderr = logging.StreamHandler(sys.stderr)
        stderr.set_name(_HANDLER_PREFIX + "stderr")
        stderr.setFormatter(formatter(json=use_json, with_pid=False))
        stderr.addFilter(REDACTOR)
        root.addHandler(stderr)
    if file is not None:
        target = os.path.abspath(file)
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in root.handlers):
            try:
                to_file = logging.FileHandler(target, mode="a", encoding="utf-8")
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise ConfigError(f"cannot open the log file named by {ENV_FILE}: {reason}") from None
            to_file.set_name(_HANDLER_PREFIX + "file")
            to_file.setFormatter(formatter(json=use_json, with_pid=True))
            to_file.addFilter(REDACTOR)
            root.addHandler(to_file)
