"""Plotly figures from the read model's plain frames (no I/O; the page only places them)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

_LAYOUT = dict(margin=dict(l=50, r=20, t=70, b=30), height=340, template="plotly_white",
               title_y=0.96, legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1.0, xanchor="right"))


def _wrapped(text: str, width: int = 60) -> str:
    """Plotly annotations never wrap on their own: break the line so it stays inside the panel."""
    import textwrap

    return "<br>".join(textwrap.wrap(text, width, break_long_words=True)) or text


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure(layout=dict(title=title, **_LAYOUT))
    fig.add_annotation(text=_wrapped(why), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def candles_figure(symbol: str | None, candles: pd.DataFrame, fills: pd.DataFrame, why_empty: str) -> go.Figure:
    """Candlesticks of ``symbol`` with the executor's entries (up triangles) and exits (down)."""
    title = f"{symbol or 'no symbol'}: candles, entries and exits"
    if candles.empty:
        return _empty(title, why_empty)
    fig = go.Figure(go.Candlestick(x=candles["timestamp"], open=candles["open"], high=candles["high"],
                                   low=candles["low"], close=candles["close"], name=symbol))
    mine = fills[fills["symbol"] == symbol] if not fills.empty else fills
    for purpose, marker, color in (("entry", "triangle-up", "#1a9850"), ("exit", "triangle-down", "#d73027")):
        f = mine[mine["purpose"] == purpose] if not mine.empty else mine
        fig.add_trace(go.Scatter(x=f["ts"] if not f.empty else [], y=f["price"] if not f.empty else [],
                                 mode="markers", name=f"{purpose} ({len(f)})",
                                 marker=dict(symbol=marker, size=11, color=color),
                                 text=f["reason"] if not f.empty else None))
    fig.update_layout(title=title, xaxis_rangeslider_visible=False, **_LAYOUT)
    return fig


def equity_figure(equity: pd.DataFrame, buy_and_hold: pd.Series, why_empty: str) -> go.Figure:
    title = "equity vs buy-and-hold (USDT)"
    if equity.empty:
        return _empty(title, why_empty)
    fig = go.Figure(go.Scatter(x=equity["ts"], y=equity["equity_usdt"], name="executor", mode="lines"))
    if len(buy_and_hold):
        fig.add_trace(go.Scatter(x=buy_and_hold.index, y=buy_and_hold.values, name="buy-and-hold",
                                 mode="lines", line=dict(dash="dot")))
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def drawdown_figure(drawdown: pd.Series, why_empty: str) -> go.Figure:
    title = "drawdown from peak"
    if drawdown.empty:
        return _empty(title, why_empty)
    fig = go.Figure(go.Scatter(x=drawdown.index, y=-drawdown.values, fill="tozeroy", name="drawdown",
                               mode="lines", line=dict(color="#d73027")))
    fig.update_layout(title=title, yaxis_tickformat=".1%", **_LAYOUT)
    return fig


def confidence_figure(decisions: pd.DataFrame, why_empty: str) -> go.Figure:
    """Distribution of the signal confidence (prob_up) the executor received, by action."""
    title = "prediction confidence received (prob_up)"
    got = decisions.dropna(subset=["confidence"]) if not decisions.empty else decisions
    if got.empty:
        return _empty(title, why_empty or "no signals received in this run")
    fig = go.Figure()
    for action, g in got.groupby(got["signal_action"].fillna("none")):
        fig.add_trace(go.Histogram(x=g["confidence"].tolist(), name=f"{action} ({len(g)})", xbins=dict(size=0.02)))
    fig.update_layout(title=title, barmode="stack", xaxis_range=[0, 1], **_LAYOUT)
    return fig


def importance_figure(importance: pd.DataFrame, why_empty: str) -> go.Figure:
    title = "champion feature importance"
    if importance.empty:
        return _empty(title, why_empty or "no feature importance")
    imp = importance.iloc[::-1]
    fig = go.Figure(go.Bar(x=imp["importance"].tolist(), y=imp["feature"].tolist(), orientation="h", name="importance"))
    fig.update_layout(title=title, **_LAYOUT)
    return fig
