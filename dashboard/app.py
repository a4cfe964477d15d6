"""The Dash page: layout and callbacks only; data comes from ``dashboard.snapshot.Sources``.

Every ``refresh_s`` the page re-reads the stores (one snapshot for all panels). Kill and
Resume write the kill switch through ``executor.events.set_kill_switch`` /
``clear_kill_switch`` - the same functions ``qt kill`` / ``qt resume`` call.
"""

from __future__ import annotations

import getpass

import pandas as pd
import redis
from dash import Dash, Input, Output, State, dcc, html

from dashboard import figures
from dashboard.health import redis_client
from dashboard.snapshot import Snapshot, Sources
from executor.events import clear_kill_switch, set_kill_switch

_CARD = {"border": "1px solid #ddd", "borderRadius": "6px", "padding": "8px", "margin": "6px"}
_GRID = {"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": "4px"}


def _table(table_id: str, df: pd.DataFrame, empty: str) -> html.Div:
    if df is None or df.empty:
        return html.Div(html.Em(empty), id=table_id)
    head = html.Tr([html.Th(c) for c in df.columns])
    rows = [html.Tr([html.Td(_fmt(v)) for v in r]) for r in df.itertuples(index=False)]
    return html.Div(html.Table([html.Thead(head), html.Tbody(rows)], style={"fontSize": "13px"}), id=table_id)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 100 else f"{v:,.2f}"
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def _kv(rows: list[tuple[str, str, str]]) -> html.Table:
    return html.Table([html.Tr([html.Th(k, style={"textAlign": "left"}), html.Td(v, id=i)]) for k, v, i in rows])


def _health_panel(s: Snapshot) -> html.Table:
    h = s.health
    age = "no heartbeat (no executor finished a bar lately)" if h.heartbeat_age_s is None else \
        f"{h.heartbeat_age_s:.1f} s ago (bar {h.heartbeat_bar})"
    state = s.run.state if s.run else "no executor run recorded"
    return _kv([("serving service", f"{h.service} - {h.service_url}/readyz", "health-service"),
                ("executor heartbeat", age, "health-heartbeat"),
                ("redis", h.redis, "health-redis"),
                ("kill switch", h.kill_switch, "health-kill"),
                ("trading state (executor record)", state, "health-state")])


def _champion_panel(s: Snapshot) -> html.Div:
    c = s.champion
    if c.version is None:
        return html.Div([html.Em(c.note, id="champion-version")])
    gates = pd.DataFrame(c.gate_rows, columns=["gate", "result", "value", "threshold"])
    return html.Div([
        _kv([("model", c.model_name, "champion-model"), ("champion version", f"v{c.version}", "champion-version"),
             ("trained at", c.trained_at or "-", "champion-trained"), ("promoted at", c.promoted_at or "-",
                                                                       "champion-promoted"),
             ("gates", c.gates, "champion-gates"), ("approval", c.approval, "champion-approval"),
             ("drift", s.drift["status"] + (f" (checked {s.drift['checked_at']})" if s.drift["checked_at"] else ""),
              "champion-drift")]),
        _table("gates-table", gates, "no gate results recorded"),
        html.Ul([html.Li(b) for b in s.drift["breaches"]]),
    ])


def _positions(s: Snapshot) -> pd.DataFrame:
    p = s.positions
    if p is None or p.empty:
        return pd.DataFrame()
    return p[["symbol", "qty", "entry_price", "entry_ts", "stop_price", "take_profit_price", "mark_price",
              "unrealised_pnl_usdt"]]


def _symbols_first(s: Snapshot) -> list[str]:
    """The run's symbols, the one shown first in front."""
    if s.run is None:
        return []
    return ([s.symbol] if s.symbol else []) + [x for x in s.run.symbols if x != s.symbol]


def build_app(sources: Sources, refresh_s: float = 5.0) -> Dash:
    app = Dash(__name__, title="Quantum Trader", update_title=None)
    graph = lambda i: dcc.Graph(id=i, config={"displayModeBar": False})  # noqa: E731
    app.layout = html.Div(style={"fontFamily": "sans-serif", "maxWidth": "1400px", "margin": "auto"}, children=[
        html.H2("Quantum Trader"),
        html.Div(id="run-info"),
        html.Div(style={"display": "flex", "gap": "12px", "alignItems": "center"}, children=[
            html.Label("symbol"), dcc.Dropdown(id="symbol", clearable=False, style={"width": "220px"}),
            html.Button("Kill (halt new entries)", id="kill-button", n_clicks=0,
                        style={"background": "#d73027", "color": "white", "padding": "6px 12px"}),
            html.Button("Resume", id="resume-button", n_clicks=0, style={"padding": "6px 12px"}),
            html.Span(id="control-result"),
        ]),
        html.Div(style=_GRID, children=[
            html.Div([html.H4("system health"), html.Div(id="health")], style=_CARD),
            html.Div([html.H4("champion model"), html.Div(id="champion")], style=_CARD),
            html.Div(graph("candles-chart"), style=_CARD),
            html.Div(graph("equity-chart"), style=_CARD),
            html.Div(graph("drawdown-chart"), style=_CARD),
            html.Div([html.H4("open positions (unrealised PnL at the latest close)"), html.Div(id="positions")],
                     style=_CARD),
            html.Div(graph("confidence-chart"), style=_CARD),
            html.Div(graph("importance-chart"), style=_CARD),
        ]),
        html.Div([html.H4("latest alerts"), html.Div(id="alerts")], style=_CARD),
        dcc.Interval(id="tick", interval=int(refresh_s * 1000), n_intervals=0),
    ])

    @app.callback(
        Output("run-info", "children"), Output("symbol", "options"), Output("health", "children"),
        Output("champion", "children"), Output("candles-chart", "figure"), Output("equity-chart", "figure"),
        Output("drawdown-chart", "figure"), Output("positions", "children"), Output("confidence-chart", "figure"),
        Output("importance-chart", "figure"), Output("alerts", "children"),
        Input("tick", "n_intervals"), Input("symbol", "value"))
    def refresh(_n, symbol):
        s = sources.snapshot(symbol)
        run = s.run
        why = s.missing.get("executor", "")
        if run is None:
            info = html.Div(html.Strong(why), id="run-id")
        else:
            venue = f" - venue {run.venue}" if run.venue else ""
            info = html.Div(f"run {run.run_id}{venue} - last bar {_fmt(run.last_bar)} - state {run.state} - "
                            f"{len(run.fills)} fills", id="run-id")
        empty = pd.DataFrame()
        return (
            info, [{"label": x, "value": x} for x in _symbols_first(s)], _health_panel(s),
            _champion_panel(s),
            figures.candles_figure(s.symbol, s.candles, run.fills if run else empty, s.missing.get("candles", why)),
            figures.equity_figure(run.equity if run else empty, s.buy_and_hold, why),
            figures.drawdown_figure(s.drawdown, why),
            _table("positions-table", _positions(s), why or "no open position"),
            figures.confidence_figure(run.decisions if run else empty, why),
            figures.importance_figure(s.champion.importance, s.champion.note),
            _table("alerts-table", run.alerts.head(12) if run else empty, why or "no alert"),
        )

    @app.callback(Output("symbol", "value"), Input("symbol", "options"), State("symbol", "value"))
    def keep_symbol(options, current):
        """The chosen symbol stays chosen; else the most traded one (the options list it first)."""
        values = [o["value"] for o in options or []]
        return current if current in values else (values[0] if values else None)

    @app.callback(Output("control-result", "children"), Input("kill-button", "n_clicks"),
                  Input("resume-button", "n_clicks"), prevent_initial_call=True)
    def control(kill_clicks, resume_clicks):
        from dash import ctx

        return switch_kill(sources.redis_url, ctx.triggered_id == "kill-button")

    return app


def switch_kill(redis_url: str | None, kill: bool) -> str:
    """Set (``kill``) or clear the kill switch; a one-line outcome for the page."""
    if not redis_url:
        return "no Redis configured (REDIS_URL): the kill switch lives in the executor's Redis"
    client = redis_client(redis_url)
    try:
        if kill:
            v = set_kill_switch(client, reason="Kill button on the dashboard", by=f"{_login()} (dashboard)")
            return f"kill switch ON at {v['at']}: executors halt new entries at their next bar"
        was = clear_kill_switch(client)
        return "kill switch cleared: executors resume at their next bar" if was else "kill switch was not set"
    except (redis.RedisError, OSError) as exc:
        return f"FAILED: Redis at {redis_url} unreachable ({type(exc).__name__}); the switch is unchanged"
    finally:
        client.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
