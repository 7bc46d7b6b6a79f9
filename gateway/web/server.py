"""Serve the web inbox with waitress on a loopback address, in a background thread."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from waitress.server import create_server

from gateway.errors import ConfigError

log = logging.getLogger("tongban.web")


class WebServer:
    """``start()`` serves ``app`` on ``listen`` (``host:port``; port 0 picks a free one: see
    :attr:`address`); ``stop()`` closes the listener and waits for the thread."""

    def __init__(self, app: Any, listen: str, *, threads: int = 4) -> None:
        host, _, port = listen.rpartition(":")
        try:
            self._server = create_server(
                app,
                host=host.strip("[]"),
                port=int(port),
                threads=threads,
                ident="tongban",
                clear_untrusted_proxy_headers=True,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot listen on {listen} (web.listen): {type(exc).__name__}") from None
        self.address = f"{host}:{self._server.effective_port}"
        self._thread = threading.Thread(target=self._run, name="web-inbox", daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # closed by stop()
            self._server.run()

    def start(self) -> None:
        self._thread.start()
        log.info("web inbox on http://%s/", self.address)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.close()
        self._thread.join(timeout)
