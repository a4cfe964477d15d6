"""Small builders shared by the executor tests (no logic under test lives here)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd

from data.synthetic import generate_market
from qt.config import Params, SyntheticParams, load_params

T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)


def ts(i: int) -> pd.Timestamp:
    return T0 + i * HOUR


def params(**sections) -> Params:
    """Params with per-section overrides, e.g. params(risk={"cooldown_bars": 2})."""
    return load_params(overrides=sections)


def candles_from_rows(rows: dict[str, list[tuple[float, float, float, float]]]) -> pd.DataFrame:
    """{symbol: [(open, high, low, close), ...]} hourly from T0 -> candles frame."""
    frames = []
    for sym, bars in rows.items():
        frames.append(pd.DataFrame({
            "symbol": sym,
            "timestamp": pd.DatetimeIndex([ts(i) for i in range(len(bars))]).astype("datetime64[ms, UTC]"),
            "open": [b[0] for b in bars], "high": [b[1] for b in bars], "low": [b[2] for b in bars],
            "close": [b[3] for b in bars], "volume": 1.0}))
    return pd.concat(frames, ignore_index=True).sort_values(["symbol", "timestamp"], ignore_index=True)


def signals_frame(actions: dict[str, list[str]], model_version: str = "7") -> pd.DataFrame:
    """{symbol: ["buy", "hold", ...]} one action per bar from T0 -> signals frame."""
    conf = {"buy": 0.8, "sell": 0.2, "hold": 0.5}
    rows = [(sym, ts(i), a, conf[a], 0.001, model_version)
            for sym, acts in actions.items() for i, a in enumerate(acts)]
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                       "model_version"])


class FakeSignalService:
    """A tiny HTTP server speaking the service contract (POST /signals) from a signals frame.

    ``unavailable_from`` (a timestamp): from that as_of on it answers 503 like a service
    with no champion. Started in a thread; use as a context manager.
    """

    def __init__(self, signals_df: pd.DataFrame, unavailable_from: pd.Timestamp | None = None):
        self.df = signals_df.assign(timestamp=pd.to_datetime(signals_df["timestamp"], utc=True))
        self.unavailable_from = unavailable_from
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                as_of = pd.Timestamp(body["as_of"])
                if outer.unavailable_from is not None and as_of >= outer.unavailable_from:
                    self._send(503, {"error": "no champion model loaded"})
                    return
                out = []
                for sym in body["symbols"]:
                    rows = outer.df[(outer.df["symbol"] == sym) & (outer.df["timestamp"] <= as_of)]
                    if len(rows):
                        r = rows.iloc[-1]
                        out.append({"symbol": sym, "action": r["action"], "confidence": float(r["confidence"]),
                                    "expected_return": float(r["expected_return"]),
                                    "model_version": str(r["model_version"]),
                                    "feature_timestamp": r["timestamp"].isoformat(),
                                    **({"atr": float(r["atr"])} if "atr" in r.index else {})})
                self._send(200, {"model_version": out[0]["model_version"] if out else None, "signals": out})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeSignalService":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


# ---- the paper-daemon scenario (shared by the paper, parity, sizing and metrics tests) ----
PAPER_SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def paper_market(bars=240, seed=3):
    """Two synthetic 1h symbols with a learnable signal (the paper-daemon scenarios)."""
    full = generate_market(PAPER_SYMBOLS, "1h", SyntheticParams(bars=300, signal_strength=0.5), seed=seed)
    return full.groupby("symbol", group_keys=False).head(bars).reset_index(drop=True)


def momentum_signals(candles):
    """A crude, causal rule: 6-bar momentum -> prob_up; one signal per bar except the last."""
    rows = []
    for sym, g in candles.groupby("symbol"):
        mom = np.log(g["close"]).diff(6).to_numpy()
        for t, m in zip(g["timestamp"].iloc[6:-1], mom[6:-1]):
            p = 0.5 + float(np.clip(m * 8, -0.4, 0.4))
            rows.append((sym, t, "buy" if p >= 0.55 else "sell" if p <= 0.45 else "hold", p, m, "5"))
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                       "model_version"])


def paper_params():
    """Risk settings that make the paper-daemon scenarios trade often."""
    return params(risk={"max_holding_bars": 6, "position_fraction": 0.3, "stop_loss_pct": 0.02,
                        "take_profit_pct": 0.04})
