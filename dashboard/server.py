"""Serve the dashboard: Dash's Flask app on werkzeug's threaded WSGI server, loopback by default.

Binding to loopback is the default on purpose: the page has Kill/Resume buttons and no
login, so exposing it (``--host 0.0.0.0``) is a decision for whoever runs it, behind a proxy
that authenticates.
"""

from __future__ import annotations

import logging
import socket

from werkzeug.serving import make_server

from dashboard.app import build_app
from dashboard.snapshot import Sources


def serve(sources: Sources, host: str, port: int, refresh_s: float, on_ready=None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). ``on_ready(url)`` is called once it listens."""
    _check_free(host, port)
    app = build_app(sources, refresh_s=refresh_s)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request (the page polls)
    server = make_server(host, port, app.server, threaded=True)
    if on_ready is not None:
        on_ready(f"http://{host}:{server.server_port}")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _check_free(host: str, port: int) -> None:
    """OSError if ``host:port`` cannot be bound (werkzeug would print and exit instead)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
