"""Notifications against a real local HTTP sink: what arrives, the storm limit, a sink that is down."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from qt.config import NotifyParams
from qt.notify import Event, Notifier, NotifyingListener, notify_promotion
from qt.procs import free_port

pytestmark = pytest.mark.slow

TOKEN = "123456:SECRET-bot-token-never-logged"


class Sink:
    """A threaded http.server that records every POST (path, JSON body) and answers ``status``."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.status = 200
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append((self.path, json.loads(body)))
                self.send_response(sink.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _notifier(sink_url: str, clock=None, **params) -> Notifier:
    p = NotifyParams(telegram_chat_id="42", telegram_api_base=sink_url, **params)
    kw = {"clock": clock} if clock else {}
    return Notifier.from_params(p, {"QT_TELEGRAM_BOT_TOKEN": TOKEN, "QT_NOTIFY_WEBHOOK_URL": f"{sink_url}/hook"}, **kw)


def test_an_event_reaches_the_webhook_as_json_and_telegram_as_send_message(sink):
    n = _notifier(sink.url)
    assert n.notify(Event("drift", "drift: 3 features shifted", "rsi_14 PSI 0.41 > 0.25", {"psi": {"rsi_14": 0.41}}))
    hook = [b for path, b in sink.received if path == "/hook"]
    tg = [(path, b) for path, b in sink.received if path != "/hook"]
    assert len(hook) == 1 and len(tg) == 1
    assert hook[0]["kind"] == "drift" and hook[0]["data"] == {"psi": {"rsi_14": 0.41}}
    assert "rsi_14 PSI 0.41" in hook[0]["text"] and hook[0]["suppressed"] == 0
    path, body = tg[0]
    assert path == f"/bot{TOKEN}/sendMessage"  # the Bot API's shape
    assert body["chat_id"] == "42" and "drift: 3 features shifted" in body["text"]


def test_a_storm_is_cut_to_the_burst_and_the_next_message_says_how_many_were_suppressed(sink):
    clock = Clock()
    n = _notifier(sink.url, clock=clock, burst=3, per_minute=6.0)  # one token per 10 s
    sent = [n.notify(Event("risk_alert", f"alert {i}", "signal source unavailable")) for i in range(20)]
    assert sent == [True] * 3 + [False] * 17
    # another kind has its own bucket: a kill switch is not drowned by the storm
    assert n.notify(Event("kill_switch", "KILL SWITCH", "max drawdown reached"))
    clock.t += 10.0
    assert n.notify(Event("risk_alert", "alert 20", "signal source unavailable"))
    hook = [b for path, b in sink.received if path == "/hook"]
    assert [b["kind"] for b in hook] == ["risk_alert"] * 3 + ["kill_switch", "risk_alert"]
    assert hook[-1]["suppressed"] == 17 and "17 more risk_alert alerts suppressed" in hook[-1]["text"]
    tg = [b for path, b in sink.received if path != "/hook"]
    assert "17 more risk_alert alerts suppressed" in tg[-1]["text"]


def test_flush_sends_the_storm_summary_on_its_own_once_a_token_is_back(sink):
    clock = Clock()
    n = _notifier(sink.url, clock=clock, burst=1, per_minute=60.0)
    for i in range(5):
        n.notify(Event("fill", f"fill {i}", "buy"))
    assert n.flush() == 0  # no token yet
    clock.t += 1.0
    assert n.flush() == 1
    last = [b for path, b in sink.received if path == "/hook"][-1]
    assert last["text"].endswith("4 more fill alerts suppressed") and last["data"] == {"suppressed": 4}


def test_a_sink_that_is_down_is_logged_once_and_nothing_raises(caplog):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    n = _notifier(dead, burst=100, timeout_s=1.0)
    with caplog.at_level(logging.INFO, logger="qt.notify"):
        results = [n.notify(Event("fill", f"fill {i}", "buy")) for i in range(5)]
    assert results == [False] * 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once for the webhook, once for telegram - not once per message
    assert {("webhook" in r.getMessage(), "telegram" in r.getMessage()) for r in warnings} == {(True, False),
                                                                                                 (False, True)}
    assert TOKEN not in caplog.text and dead not in caplog.text


def test_an_error_answer_is_logged_once_then_recovery_is_logged_and_the_token_never(sink, caplog):
    sink.status = 503
    n = _notifier(sink.url, burst=100)
    with caplog.at_level(logging.INFO, logger="qt.notify"):
        assert not n.notify(Event("fill", "fill 1", "buy"))
        assert not n.notify(Event("fill", "fill 2", "buy"))
        sink.status = 200
        assert n.notify(Event("fill", "fill 3", "buy"))
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("unreachable (HTTP 503)" in m for m in msgs) == 2  # webhook + telegram, once each
    assert sum("delivers again after 2 failed" in m for m in msgs) == 2
    assert TOKEN not in caplog.text and TOKEN not in repr(n.channels)
    assert sink.url not in caplog.text and sink.url not in repr(n.channels)  # the webhook URL is a secret too


def test_telegram_without_its_token_in_the_environment_is_off_and_says_so(sink, caplog):
    p = NotifyParams(telegram_chat_id="42", telegram_api_base=sink.url)
    with caplog.at_level(logging.WARNING, logger="qt.notify"):
        n = Notifier.from_params(p, {})
    assert not n.enabled and not n.notify(Event("drift", "x", "y"))
    assert "QT_TELEGRAM_BOT_TOKEN is not" in caplog.text and sink.received == []


def test_kinds_left_out_of_notify_events_are_not_sent(sink):
    n = _notifier(sink.url, events=["kill_switch"])
    assert not n.notify(Event("fill", "fill", "buy"))
    assert n.notify(Event("kill_switch", "halt", "drawdown"))
    assert {b["kind"] for path, b in sink.received if path == "/hook"} == {"kill_switch"}


def test_promotion_decision_is_sent_with_version_and_reasons(sink):
    p = NotifyParams()
    summary = {"model_name": "qt-ens", "version": "4", "promoted": False, "approval": None, "champion": "3",
               "previous_champion": "3", "reasons": ["bootstrap_ci: lower bound -0.2 <= 0"]}
    assert notify_promotion(p, summary, environ={"QT_NOTIFY_WEBHOOK_URL": f"{sink.url}/hook"})
    (path, body), = sink.received
    assert body["kind"] == "promotion" and body["data"]["version"] == "4"
    assert "v4 NOT promoted" in body["text"] and "bootstrap_ci" in body["text"]
    assert notify_promotion(p, summary, environ={}) is False  # no channel: nothing


def test_loop_listener_adapter_turns_fills_alerts_and_the_kill_switch_into_notifications(sink):
    from executor.loop import LoopListener
    from executor.portfolio import ClosedTrade, Fill
    from executor.risk import RiskAlert

    n = _notifier(sink.url, burst=10)
    listener = NotifyingListener(n)
    hooks = [m for m in vars(LoopListener) if m.startswith("on_")]
    assert all(callable(getattr(listener, m)) for m in hooks)
    listener.on_signals(pd.Timestamp("2024-01-01", tz="UTC"), [])  # unused hooks are no-ops
    ts = pd.Timestamp("2024-01-01 10:00", tz="UTC")
    fill = Fill(7, "BTC/USDT", ts, "sell", "exit", "take_profit", 0.01, 43000.0, 430.0, 0.43)
    trade = ClosedTrade("BTC/USDT", ts, ts, 0.01, 40000.0, 43000.0, 0.83, 29.17, "take_profit", 5)
    listener.on_fill(fill, None, trade)
    listener.on_alert(RiskAlert(ts, "NO_SIGNAL", "signal source unavailable: timeout"))
    listener.on_alert(RiskAlert(ts, "STATE_CHANGE", "ACTIVE -> HALTED: max drawdown reached",
                                {"from": "ACTIVE", "to": "HALTED", "drawdown": 0.26}))
    hook = [b for path, b in sink.received if path == "/hook"]
    assert [b["kind"] for b in hook] == ["fill", "risk_alert", "kill_switch"]
    assert hook[0]["data"]["pnl_usdt"] == 29.17 and "BTC/USDT" in hook[0]["text"]
    assert hook[2]["data"]["drawdown"] == 0.26 and "KILL SWITCH" in hook[2]["text"]
