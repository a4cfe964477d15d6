"""Health read model: Redis, the kill switch, the executor heartbeat, the serving service.

Each probe answers within a short timeout and turns failure into a plain status
("unreachable", "not set", ...) - the page must show a dead part, not die with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import httpx
import redis

from dashboard.calc import heartbeat_age_s
from executor.events import HEARTBEAT_KEY, HEARTBEAT_TTL_S, KILL_KEY

_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Health:
    redis: str  # "ok" | "not configured (REDIS_URL unset)" | "unreachable: ..."
    kill_switch: str  # "off" | "ON (reason, by, at)" | "unknown (...)"
    kill_switch_on: bool | None  # None when Redis cannot say
    heartbeat_age_s: float | None  # None: no heartbeat (no executor finished a bar lately)
    heartbeat_bar: str | None  # the bar the executor last finished (its open time)
    service: str  # "ready" | "not ready (503 ...)" | "unreachable: ..."
    service_url: str

    def to_dict(self) -> dict:
        return asdict(self)


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)


def _describe_kill(raw: bytes) -> str:
    try:
        v = json.loads(raw)
        return f"ON ({v.get('reason', '?')}; by {v.get('by', '?')} at {v.get('at', '?')})"
    except (ValueError, AttributeError):
        return f"ON ({raw.decode(errors='replace')[:60]})"


def probe_redis(url: str | None) -> dict:
    """Redis ping, the kill switch and the heartbeat, or plain statuses saying what is missing."""
    if not url:
        return {"redis": "not configured (REDIS_URL unset)", "kill_switch": "unknown (no Redis)",
                "kill_switch_on": None, "heartbeat_age_s": None, "heartbeat_bar": None}
    client = redis_client(url)
    try:
        client.ping()
        kill = client.get(KILL_KEY)
        pipe = client.pipeline()
        pipe.get(HEARTBEAT_KEY)
        pipe.pttl(HEARTBEAT_KEY)
        beat, ttl_ms = pipe.execute()
    except (redis.RedisError, OSError) as exc:
        return {"redis": f"unreachable at {url}: {type(exc).__name__}", "kill_switch": "unknown (Redis down)",
                "kill_switch_on": None, "heartbeat_age_s": None, "heartbeat_bar": None}
    finally:
        client.close()
    return {"redis": "ok", "kill_switch": "off" if kill is None else _describe_kill(kill),
            "kill_switch_on": kill is not None,
            "heartbeat_age_s": heartbeat_age_s(ttl_ms if beat is not None else None, HEARTBEAT_TTL_S),
            "heartbeat_bar": beat.decode() if beat is not None else None}


def probe_service(url: str) -> str:
    """``GET {url}/readyz`` of the serving service: ready only with a champion loaded."""
    try:
        resp = httpx.get(f"{url.rstrip('/')}/readyz", timeout=_TIMEOUT_S * 2)
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    if resp.status_code == 200:
        return "ready"
    return f"not ready ({resp.status_code} {resp.text.strip()[:80]})"


def read_health(redis_url: str | None, service_url: str) -> Health:
    return Health(**probe_redis(redis_url), service=probe_service(service_url), service_url=service_url)
