"""Injected failures for the local exchange, so clients are tested against what Binance does
on a bad day: added latency, HTTP 429 (with ``Retry-After``), 418 (IP ban), 500/502/503, a
timeout (the answer comes after the client gave up), ``refuse`` (HTTP 400 with a Binance error
code, -4028: the exchange declines the request, e.g. a leverage change), a dropped connection (the socket is
closed without any response) and ``drop_after`` - the request is fully processed (an order is
accepted) and then the connection is closed before the answer, the case a client must
resolve by looking its order up by client order id instead of sending it again.

Configuration (JSON, also accepted by ``POST /_qt/faults``)::

    {"seed": 7, "latency_ms": 0,
     "rules": [{"kind": "429", "path_prefix": "/api/v3/klines", "symbol": "BTCUSDT", "method": "GET",
                "probability": 0.5, "every_nth": null, "first_k": null,
                "retry_after_s": 1, "timeout_s": 15.0}]}

A rule *matches* a request when the path starts with ``path_prefix``, the request's
``symbol`` parameter (query string or form body) equals ``symbol`` and its HTTP method equals
``method`` (each when set). The n-th matching request (n from 1)
is *eligible* when ``first_k`` is unset or n <= first_k; it *fires* when ``every_nth`` divides
n, or else with ``probability`` (default 1) drawn from a hash of (seed, rule, n) - so the same
config gives the same faults for the same request sequence, whatever else is going on. The
first rule that fires decides. ``decide_fault`` is that pure decision; ``FaultInjector`` holds
the per-rule counters and the injected counts by kind that ``GET /_qt/faults`` reports.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qt.errors import ConfigError

FaultKind = Literal["429", "418", "500", "502", "503", "timeout", "drop", "drop_after", "refuse"]
FAULT_KINDS: tuple[str, ...] = ("429", "418", "500", "502", "503", "timeout", "drop", "drop_after", "refuse")


class FaultRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    path_prefix: str | None = None
    symbol: str | None = None  # Binance id, e.g. BTCUSDT
    method: Literal["GET", "POST", "PUT", "DELETE"] | None = None
    probability: float | None = Field(None, ge=0.0, le=1.0)
    every_nth: int | None = Field(None, ge=1)
    first_k: int | None = Field(None, ge=0)
    retry_after_s: int = Field(1, ge=0)  # Retry-After header of 429/418
    timeout_s: float = Field(15.0, gt=0.0, le=600.0)  # how long a "timeout" stalls before answering

    @model_validator(mode="after")
    def _one_trigger(self) -> "FaultRule":
        if self.probability is not None and self.every_nth is not None:
            raise ValueError("set probability or every_nth, not both")
        return self


class FaultConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    latency_ms: int = Field(0, ge=0, le=60_000)  # added to every request except /_qt/*
    rules: tuple[FaultRule, ...] = ()


def parse_fault_config(raw: dict | str | None) -> FaultConfig:
    """A FaultConfig from a dict or JSON text; ConfigError naming the bad key otherwise."""
    if raw is None:
        return FaultConfig()
    try:
        if isinstance(raw, str):
            return FaultConfig.model_validate_json(raw)
        return FaultConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"fault config: {key}: {first['msg']}") from None


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request: wait ``latency_ms``, then inject ``kind`` (None = answer)."""

    latency_ms: int
    kind: str | None = None
    rule_index: int | None = None
    retry_after_s: int = 0
    timeout_s: float = 0.0


def rule_matches(rule: FaultRule, path: str, symbol: str | None, method: str | None = None) -> bool:
    if rule.path_prefix is not None and not path.startswith(rule.path_prefix):
        return False
    if rule.symbol is not None and symbol != rule.symbol:
        return False
    if rule.method is not None and method != rule.method:
        return False
    return True


def uniform_draw(seed: int, rule_index: int, ordinal: int) -> float:
    """A number in [0, 1) fixed by (seed, rule, ordinal): reproducible, independent of timing."""
    digest = hashlib.blake2b(f"{seed}:{rule_index}:{ordinal}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def rule_fires(rule: FaultRule, seed: int, rule_index: int, ordinal: int) -> bool:
    """Whether the ``ordinal``-th (from 1) matching request of this rule gets the fault."""
    if rule.first_k is not None and ordinal > rule.first_k:
        return False
    if rule.every_nth is not None:
        return ordinal % rule.every_nth == 0
    probability = 1.0 if rule.probability is None else rule.probability
    return uniform_draw(seed, rule_index, ordinal) < probability


def decide_fault(config: FaultConfig, ordinals: list[int], path: str, symbol: str | None) -> FaultDecision:
    """Pure decision for one request; ``ordinals[i]`` is rule i's ordinal for this request
    (its count of matching requests including this one, 0 when it does not match)."""
    for i, rule in enumerate(config.rules):
        if ordinals[i] and rule_fires(rule, config.seed, i, ordinals[i]):
            return FaultDecision(config.latency_ms, rule.kind, i, rule.retry_after_s, rule.timeout_s)
    return FaultDecision(config.latency_ms)


class FaultInjector:
    """The fault config in force plus its counters; thread-safe, replaced as a whole."""

    def __init__(self, config: FaultConfig | None = None):
        self._lock = threading.Lock()
        self._set(config or FaultConfig())

    def _set(self, config: FaultConfig) -> None:
        self.config = config
        self._matched = [0] * len(config.rules)
        self._injected = [0] * len(config.rules)
        self._by_kind = {kind: 0 for kind in FAULT_KINDS}
        self._requests = 0

    def replace(self, config: FaultConfig) -> None:
        """Install ``config`` and reset every counter (a new test phase starts from zero)."""
        with self._lock:
            self._set(config)

    def decide(self, path: str, symbol: str | None, method: str | None = None) -> FaultDecision:
        with self._lock:
            self._requests += 1
            ordinals = []
            for i, rule in enumerate(self.config.rules):
                if rule_matches(rule, path, symbol, method):
                    self._matched[i] += 1
                    ordinals.append(self._matched[i])
                else:
                    ordinals.append(0)
            decision = decide_fault(self.config, ordinals, path, symbol)
            if decision.kind is not None:
                self._injected[decision.rule_index] += 1
                self._by_kind[decision.kind] += 1
            return decision

    def report(self) -> dict:
        """Config and counters, as served by ``GET /_qt/faults``."""
        with self._lock:
            return {
                "config": self.config.model_dump(mode="json"),
                "requests": self._requests,
                "injected": dict(self._by_kind),
                "rules": [{"matched": m, "injected": n} for m, n in zip(self._matched, self._injected)],
            }
