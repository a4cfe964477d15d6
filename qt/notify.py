"""Alerts to a person: a generic JSON webhook and Telegram, rate-limited so a storm stays readable.

Events (``Event.kind``): ``fill``, ``risk_alert``, ``kill_switch``, ``promotion``, ``drift``.
Each kind has its own token bucket (``notify.burst`` at once, then ``notify.per_minute``): what
the bucket refuses is counted, and the next message of that kind that goes out says
"N more <kind> alerts suppressed" (``Notifier.flush`` sends that line on its own once a token
is back). A storm of fills therefore never hides a kill switch.

Delivery is best effort and never raises: trading and training must not stop because a phone
is unreachable. A channel that fails is logged ONCE (warning) until it delivers again (info).
The webhook URL and the Telegram bot token come from the environment variables
``notify.webhook_url_env`` / ``notify.telegram_token_env`` (read once, at the boundary, in
``Notifier.from_params``): both are secrets (the token is part of the Bot API's URL), so no URL
is ever logged, and error text is scrubbed of them.

``NotifyingListener`` is a LoopListener-compatible adapter (fills, risk alerts, kill switch)
for the executor's loop; ``start_notifier`` is how the paper and live daemons get a notifier
(None when no channel is configured).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from qt.config import NotifyParams, Params
from qt.redact import redact

log = logging.getLogger("qt.notify")

KINDS = ("fill", "risk_alert", "kill_switch", "promotion", "drift")


@dataclass(frozen=True)
class Event:
    """One thing a person should hear about: a one-line ``text`` and its numbers."""

    kind: str
    title: str
    text: str
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; one of {', '.join(KINDS)}")


# -- pure: the rate limit ------------------------------------------------------------------------
class TokenBucket:
    """``capacity`` tokens, refilled at ``per_second``; ``now`` is passed in (tests replay time)."""

    def __init__(self, capacity: int, per_second: float, now: float):
        self.capacity = float(capacity)
        self.per_second = per_second
        self.tokens = float(capacity)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """Per-kind buckets plus the count of what each refused since its last delivered message."""

    def __init__(self, burst: int, per_minute: float):
        self.burst = burst
        self.per_second = per_minute / 60.0
        self.buckets: dict[str, TokenBucket] = {}
        self.suppressed: dict[str, int] = {}

    def admit(self, kind: str, now: float) -> int | None:
        """None: refused (counted). Otherwise the number suppressed before it (and reset to 0)."""
        bucket = self.buckets.setdefault(kind, TokenBucket(self.burst, self.per_second, now))
        if not bucket.take(now):
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return None
        return self.suppressed.pop(kind, 0)


def storm_line(kind: str, n: int) -> str:
    return f"{n} more {kind} alert{'s' if n != 1 else ''} suppressed"


def render_text(event: Event, suppressed: int) -> str:
    """The message a person reads: title, text, and the storm summary when there was one."""
    lines = [f"[{event.kind}] {event.title}", event.text]
    if suppressed:
        lines.append(f"({storm_line(event.kind, suppressed)})")
    return "\n".join(line for line in lines if line)


def webhook_payload(event: Event, suppressed: int, sent_at: float) -> dict:
    """The generic webhook's JSON body."""
    return {"kind": event.kind, "title": event.title, "text": render_text(event, suppressed),
            "data": event.data, "suppressed": suppressed,
            "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sent_at))}


def telegram_payload(chat_id: str, event: Event, suppressed: int) -> dict:
    """Bot API ``sendMessage`` body (plain text: no parse_mode, so nothing needs escaping)."""
    return {"chat_id": chat_id, "text": render_text(event, suppressed), "disable_web_page_preview": True}


# -- I/O: the channels ---------------------------------------------------------------------------
class _Channel:
    """One destination; remembers whether it is failing so an outage is logged once."""

    name = "channel"

    def __init__(self, client: httpx.Client, secrets: Sequence[str] = ()):
        self.client = client
        self.secrets = [s for s in secrets if s]
        self.down = False
        self.failures = 0

    def _post(self, url: str, body: dict) -> bool:
        try:
            resp = self.client.post(url, json=body)
            ok = 200 <= resp.status_code < 300
            problem = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            ok, problem = False, f"{type(exc).__name__}: {redact(str(exc), self.secrets)}"
        if ok:
            if self.down:
                log.info("notify: %s delivers again after %d failed message(s)", self.name, self.failures)
            self.down, self.failures = False, 0
            return True
        self.failures += 1
        if not self.down:
            log.warning("notify: %s unreachable (%s); alerts to it are dropped until it answers again",
                        self.name, problem)
        self.down = True
        return False

    def send(self, event: Event, suppressed: int, now: float) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class WebhookChannel(_Channel):
    name = "webhook"

    def __init__(self, client: httpx.Client, url: str):
        super().__init__(client, secrets=[url])  # a webhook URL often embeds its token
        self._url = url

    def __repr__(self) -> str:
        return "WebhookChannel()"

    def send(self, event: Event, suppressed: int, now: float) -> bool:
        return self._post(self._url, webhook_payload(event, suppressed, now))


class TelegramChannel(_Channel):
    name = "telegram"

    def __init__(self, client: httpx.Client, api_base: str, token: str, chat_id: str):
        super().__init__(client, secrets=[token])
        self._url = f"{api_base.rstrip('/')}/bot{token}/sendMessage"
        self.chat_id = chat_id

    def __repr__(self) -> str:  # the token is in the URL: never print it
        return f"TelegramChannel(chat_id={self.chat_id!r})"

    def send(self, event: Event, suppressed: int, now: float) -> bool:
        return self._post(self._url, telegram_payload(self.chat_id, event, suppressed))


class Notifier:
    """Rate-limits per kind and fans each admitted event out to every channel. Never raises."""

    def __init__(self, channels: Sequence[_Channel], burst: int = 3, per_minute: float = 6.0,
                 kinds: Sequence[str] = KINDS, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.channels = list(channels)
        self.limiter = RateLimiter(burst, per_minute)
        self.kinds = set(kinds)
        self.clock = clock
        self.wall_clock = wall_clock
        self.delivered = 0

    @classmethod
    def from_params(cls, params: NotifyParams, environ: Mapping[str, str], **kw) -> "Notifier":
        """Channels from ``notify:``; Telegram needs ``telegram_chat_id`` and the token variable set
        (missing token: Telegram is off, said once in the log without the value)."""
        client = httpx.Client(timeout=params.timeout_s)
        channels: list[_Channel] = []
        url = environ.get(params.webhook_url_env, "")
        if url.startswith(("http://", "https://")):
            channels.append(WebhookChannel(client, url))
        elif url:
            log.warning("notify: %s is not an http(s) URL; webhook alerts are off", params.webhook_url_env)
        if params.telegram_chat_id:
            token = environ.get(params.telegram_token_env, "")
            if token:
                channels.append(TelegramChannel(client, params.telegram_api_base, token, params.telegram_chat_id))
            else:
                log.warning("notify: telegram_chat_id is set but %s is not; Telegram alerts are off",
                            params.telegram_token_env)
        return cls(channels, burst=params.burst, per_minute=params.per_minute, kinds=params.events, **kw)

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def notify(self, event: Event) -> bool:
        """Deliver (True when at least one channel took it); False when off, limited or all failed."""
        if not self.channels or event.kind not in self.kinds:
            return False
        suppressed = self.limiter.admit(event.kind, self.clock())
        if suppressed is None:
            return False
        return self._deliver(event, suppressed)

    def flush(self) -> int:
        """Send the pending "N more ... suppressed" lines whose bucket has a token again -> how many."""
        sent = 0
        for kind, n in list(self.limiter.suppressed.items()):
            if n and self.limiter.buckets[kind].take(self.clock()):
                del self.limiter.suppressed[kind]
                summary = Event(kind, "storm summary", storm_line(kind, n), {"suppressed": n})
                sent += self._deliver(summary, 0)
        return sent

    def _deliver(self, event: Event, suppressed: int) -> bool:
        now = self.wall_clock()
        results = [ch.send(event, suppressed, now) for ch in self.channels]
        self.delivered += any(results)
        return any(results)

    def close(self) -> None:
        clients = {id(ch.client): ch.client for ch in self.channels}
        for c in clients.values():
            c.close()


# -- events from the rest of the system -----------------------------------------------------------
def promotion_event(summary: dict) -> Event:
    """From the promote stage's registry summary: promoted, awaiting approval, or rejected."""
    v, name = summary.get("version"), summary.get("model_name")
    if summary.get("promoted"):
        title, text = f"{name} v{v} is champion", f"replaced v{summary.get('previous_champion')}; every gate passed"
    elif summary.get("approval") == "pending":
        title, text = f"{name} v{v} awaits approval", f"every gate passed; {summary.get('next_step')}"
    else:
        reasons = summary.get("reasons") or []
        title = f"{name} v{v} NOT promoted"
        text = f"champion stays v{summary.get('champion')}: " + "; ".join(reasons[:3])
    return Event("promotion", title, text, {k: summary.get(k) for k in (
        "model_name", "version", "promoted", "approval", "champion", "previous_champion")})


def notify_promotion(params: NotifyParams, summary: dict, environ: Mapping[str, str] | None = None) -> bool:
    """The promote stage's hook: one message per decision; no channel configured = nothing."""
    import os

    environ = os.environ if environ is None else environ
    if not (environ.get(params.webhook_url_env) or params.telegram_chat_id):
        return False
    notifier = Notifier.from_params(params, environ)
    try:
        return notifier.notify(promotion_event(summary))
    finally:
        notifier.close()


class NotifyingListener:
    """LoopListener-compatible: fills, risk alerts and the kill switch become notifications.

    A ``STATE_CHANGE`` alert into ``halted`` is the kill switch (drawdown limit or ``qt:kill``);
    any other alert is a risk alert. Hooks this adapter does not use (and any added to
    LoopListener later) are no-ops, so attaching it never breaks the loop.
    """

    def __init__(self, notifier: Notifier):
        self.notifier = notifier

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return _no_op
        raise AttributeError(name)

    def on_fill(self, fill, portfolio, trade) -> None:
        pnl = getattr(trade, "pnl_usdt", None)
        text = (f"{fill.side} {fill.qty:.6g} {fill.symbol} @ {fill.price:.6g} ({fill.purpose}: {fill.reason}), "
                f"notional {fill.notional_usdt:.2f} USDT, fee {fill.fee_usdt:.4f}")
        if pnl is not None:
            text += f", trade PnL {pnl:+.2f} USDT"
        self.notifier.notify(Event("fill", f"{fill.purpose} {fill.symbol}", text, {
            "symbol": fill.symbol, "side": fill.side, "qty": fill.qty, "price": fill.price,
            "purpose": fill.purpose, "reason": fill.reason, "ts": str(fill.timestamp), "pnl_usdt": pnl}))

    def on_alert(self, alert) -> None:
        numbers = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                   for k, v in (alert.numbers or {}).items()}
        halted = alert.kind == "STATE_CHANGE" and str(numbers.get("to", "")).lower() == "halted"
        kind = "kill_switch" if halted else "risk_alert"
        title = "KILL SWITCH: trading halted" if halted else f"risk alert {alert.kind}"
        self.notifier.notify(Event(kind, title, alert.message, {"ts": str(alert.timestamp), "alert": alert.kind,
                                                                **numbers}))


def _no_op(*_args, **_kwargs) -> None:
    return None


def start_notifier(params: Params, environ: Mapping[str, str] | None = None) -> Notifier | None:
    """A notifier when a channel is configured (``notify:`` + its environment variables), else None."""
    notifier = Notifier.from_params(params.notify, os.environ if environ is None else environ)
    if notifier.enabled:
        return notifier
    notifier.close()
    return None
