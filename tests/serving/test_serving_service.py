"""The real ``bentoml serve`` process against a tmp lake and a tmp MLflow registry.

One server per module (cold start ~20 s). It starts BEFORE any champion exists,
so the first observations are the not-ready state; then the toy champion
(prob_up = sigmoid(K * logret_4)) is registered and the server must pick it up.
The hot-reload and alias-removal tests move the champion and run last.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass

import httpx
import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from executor.signals import action_from_probability
from features.compute import compute_features, warmup_bars
from qt.config import FeatureParams, Params, load_params
from data.lake import read_candles
from qt.paths import StatePaths
from serving.launcher import ServiceProcess

import qt_serving_support as support

pytestmark = pytest.mark.slow

K_V1 = 50.0
K_V2 = -50.0
FRESH = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
LAST_BAR = pd.Timestamp("2023-01-01T00:00:00Z") + pd.Timedelta(hours=699)  # 700 synthetic 1h bars


@dataclass
class Stack:
    paths: StatePaths
    params: Params
    url: str
    model_name: str
    v1: str
    before_champion: dict


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    home = tmp_path_factory.mktemp("qt_home")
    paths = StatePaths(home).ensure()
    support.write_synthetic_lake(paths)
    params_file = home / "params.yaml"
    # thresholds off the defaults: proves the service reads QT_PARAMS
    params_file.write_text(yaml.safe_dump({"signal": {"buy_threshold": 0.53, "sell_threshold": 0.47},
                                           "serving": {"history_bars": 300, "max_staleness_bars": 2}}))
    params = load_params(params_file)
    support.init_registry(paths.tracking_uri)
    svc = ServiceProcess(paths, params_path=params_file, extra_env={"QT_SERVING_RELOAD_SECONDS": "0.5", "QT_LAKE": str(paths.raw)})
    with svc:
        svc.wait_live(120)
        before = {
            "readyz": httpx.get(svc.url + "/readyz", timeout=10).status_code,
            "signals": httpx.post(svc.url + "/signals", json={"symbols": ["BTC/USDT"]}, timeout=10),
            "predict": httpx.post(svc.url + "/predict", json={"rows": [{"logret_4": 0.0}]}, timeout=10),
        }
        v1 = support.register_toy_champion(paths, params.train.model_name, K_V1)
        svc.wait_ready(60)
        yield Stack(paths, params, svc.url, params.train.model_name, v1, before)


def _post_signals(stack: Stack, symbols, as_of=None) -> httpx.Response:
    return httpx.post(stack.url + "/signals", json={"symbols": symbols, "as_of": as_of}, timeout=30)


def _expected_signals(stack: Stack, version: str, symbols: list[str], as_of: pd.Timestamp) -> list[dict]:
    """The same decision computed in this process: per symbol (no batching), from the lake."""
    fp = FeatureParams()
    window = max(stack.params.serving.history_bars, warmup_bars(fp) + 1)
    mlflow.set_tracking_uri(stack.paths.tracking_uri)
    mlflow.set_registry_uri(stack.paths.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{stack.model_name}/{version}")
    candles = read_candles(stack.paths.raw, symbols, "1h")
    out = []
    for sym in symbols:
        c = candles[(candles["symbol"] == sym) & (candles["timestamp"] <= as_of)].tail(window)
        row = compute_features(c, fp).tail(1)
        pred = model.predict(row[model.metadata.metadata["feature_columns"]])
        p = float(pred["prob_up"].iat[0])
        out.append({"symbol": sym, "action": action_from_probability(p, stack.params.signal), "confidence": p,
                    "expected_return": float(pred["expected_return"].iat[0]), "model_version": version,
                    "feature_timestamp": row["timestamp"].iat[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
                    # the ATR the executor's ATR levels read: the feature atr_{risk.atr_period} of the bar
                    "atr": float(row[f"atr_{stack.params.risk.atr_period}"].iat[0])})
    return out


def _hand_prob(stack: Stack, symbol: str, bar: pd.Timestamp, k: float) -> float:
    """sigmoid(k * ln(close_t / close_{t-4})) from four raw closes, no feature code involved."""
    c = read_candles(stack.paths.raw, [symbol], "1h").set_index("timestamp")["close"]
    return support.sigmoid(k * math.log(c[bar] / c[bar - pd.Timedelta(hours=4)]))


def _current_version(stack: Stack) -> str:
    return httpx.get(stack.url + "/metadata", timeout=10).json()["model_version"]


# ---------------------------------------------------------------- readiness


def test_not_ready_and_refuses_signals_before_a_champion_exists(stack):
    assert stack.before_champion["readyz"] == 503
    for key in ("signals", "predict"):
        resp = stack.before_champion[key]
        assert resp.status_code == 503
        assert "no champion" in resp.json()["error"]
        assert f"{stack.model_name}@champion" in resp.json()["error"]


def test_ready_once_a_champion_is_registered(stack):
    assert httpx.get(stack.url + "/readyz", timeout=10).status_code == 200


# ---------------------------------------------------------------- /signals


def test_signals_for_several_symbols_match_the_in_process_decision(stack):
    version = _current_version(stack)
    resp = _post_signals(stack, FRESH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == version
    assert body["signals"] == _expected_signals(stack, version, FRESH, LAST_BAR)
    assert {s["feature_timestamp"] for s in body["signals"]} == {"2023-01-30T03:00:00Z"}


def test_overlapping_requests_get_the_answers_they_get_one_at_a_time(stack):
    """Cached requests are answered on the event loop while requests for new bars compute their
    rows in a worker thread: overlapping, every answer equals the one given alone."""
    bars = [f"2023-01-2{d}T0{h}:00:00Z" for d in (1, 2) for h in (1, 2, 3)]
    alone = {bar: _post_signals(stack, FRESH, bar).json() for bar in bars}
    answers: list[tuple[str, dict]] = []

    def ask(sequence: list[str]) -> None:
        with httpx.Client(timeout=30) as c:
            for bar in sequence:
                answers.append((bar, c.post(stack.url + "/signals", json={"symbols": FRESH, "as_of": bar}).json()))

    # three clients cycle over three bars (a row per symbol is cached: some hits, some recomputed),
    # three more ask one other bar each
    threads = [threading.Thread(target=ask, args=(bars[:3] * 3,)) for _ in range(3)]
    threads += [threading.Thread(target=ask, args=([bar] * 3,)) for bar in bars[3:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 3 * 9 + 3 * 3
    for bar, body in answers:
        assert body == alone[bar], bar


def test_signal_probability_is_the_champion_applied_to_the_last_bar(stack):
    k = K_V1 if _current_version(stack) == stack.v1 else K_V2
    for sig in _post_signals(stack, FRESH).json()["signals"]:
        assert sig["confidence"] == pytest.approx(_hand_prob(stack, sig["symbol"], LAST_BAR, k), rel=1e-9)


def test_actions_follow_the_configured_thresholds(stack):
    sigs = _post_signals(stack, support.EIGHT_SYMBOLS).json()["signals"]
    for s in sigs:
        p = s["confidence"]
        want = "buy" if p >= 0.53 else "sell" if p <= 0.47 else "hold"
        assert s["action"] == want, s


@pytest.mark.parametrize("as_of, bar", [
    ("2023-01-20T10:00:00Z", "2023-01-20T10:00:00Z"),      # exactly a bar's open time
    ("2023-01-20T10:59:59Z", "2023-01-20T10:00:00Z"),      # inside the bar: still that bar
    ("2023-01-20T13:30:00+02:00", "2023-01-20T11:00:00Z"),  # other zone, converted to UTC
])
def test_as_of_selects_the_last_bar_at_or_before_it(stack, as_of, bar):
    version = _current_version(stack)
    resp = _post_signals(stack, FRESH[:2], as_of)
    assert resp.status_code == 200, resp.text
    got = resp.json()["signals"]
    assert [s["feature_timestamp"] for s in got] == [bar, bar]
    assert got == _expected_signals(stack, version, FRESH[:2], pd.Timestamp(bar))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("body, status, reason", [
    ({"symbols": []}, 400, "symbols is empty"),
    ({"symbols": ["FOO/USDT"]}, 404, "unknown symbol 'FOO/USDT'"),
    ({"symbols": ["BTCUSDT"]}, 400, "not a ccxt symbol"),
    ({"symbols": ["BTC/USDT", "BTC/USDT"]}, 400, "listed twice"),
    ({"symbols": ["BTC/USDT"], "as_of": "garbage"}, 400, "as_of 'garbage' is not a time"),
    ({"symbols": ["BTC/USDT"], "as_of": "NaN"}, 400, "as_of 'NaN' is not a time"),
    ({"symbols": "BTC/USDT"}, 400, "validation error"),
    ({"symbols": ["BTC/USDT"], "as_of": 12}, 400, "validation error"),
    ({}, 400, "validation error"),
    ({"symbols": [support.LAGGING_SYMBOL]}, 422, "stale"),  # null as_of = newest candle in the lake
    ({"symbols": ["BTC/USDT"], "as_of": "2023-02-15T00:00:00Z"}, 422, "stale"),
    ({"symbols": ["BTC/USDT"], "as_of": "2022-12-31T00:00:00Z"}, 422, "before the first candle"),
    ({"symbols": ["BTC/USDT"], "as_of": "2023-01-05T00:00:00Z"}, 422, "warm-up"),
])
def test_bad_signal_requests_get_4xx_with_the_reason(stack, body, status, reason):
    resp = httpx.post(stack.url + "/signals", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    assert reason in resp.text


def test_json_nan_and_broken_json_are_rejected(stack):
    for raw in (b'{"symbols": ["BTC/USDT"], "as_of": NaN}', b"{not json"):
        resp = httpx.post(stack.url + "/signals", content=raw, headers={"content-type": "application/json"},
                          timeout=30)
        assert resp.status_code == 400, resp.text
        assert "error" in resp.json()


def test_lagging_symbol_is_refused_even_next_to_fresh_ones(stack):
    resp = _post_signals(stack, ["BTC/USDT", support.LAGGING_SYMBOL])
    assert resp.status_code == 422
    assert support.LAGGING_SYMBOL in resp.json()["error"] and "5 bars" in resp.json()["error"]


# ---------------------------------------------------------------- /predict


def test_predict_returns_the_raw_champion_output(stack):
    cols = httpx.get(stack.url + "/metadata", timeout=10).json()["feature_columns"]
    version = _current_version(stack)
    k = K_V1 if version == stack.v1 else K_V2
    rows = [{c: 0.0 for c in cols} | {"logret_4": x} for x in (-0.02, 0.0, 0.01)]
    resp = httpx.post(stack.url + "/predict", json={"rows": rows}, timeout=30)
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    assert [p["prob_up"] for p in preds] == pytest.approx([support.sigmoid(k * x) for x in (-0.02, 0.0, 0.01)])
    assert [p["expected_return"] for p in preds] == pytest.approx([-0.01, 0.0, 0.005])


@pytest.mark.parametrize("rows, reason", [
    ([], "rows is empty"),
    ([{"logret_4": 0.1}], "missing features"),
])
def test_predict_refuses_rows_without_exactly_the_feature_columns(stack, rows, reason):
    resp = httpx.post(stack.url + "/predict", json={"rows": rows}, timeout=30)
    assert resp.status_code == 400
    assert reason in resp.json()["error"]


def test_predict_refuses_non_finite_values(stack):
    cols = httpx.get(stack.url + "/metadata", timeout=10).json()["feature_columns"]
    raw = "{\"rows\": [{" + ", ".join(f'"{c}": {"NaN" if c == "rsi_14" else "0.0"}' for c in cols) + "}]}"
    resp = httpx.post(stack.url + "/predict", content=raw.encode(), headers={"content-type": "application/json"},
                      timeout=30)
    assert resp.status_code == 400
    assert "rsi_14" in resp.json()["error"]


# ---------------------------------------------------------------- /metadata, /metrics


def test_metadata_describes_the_champion_over_get_and_post(stack):
    got = httpx.get(stack.url + "/metadata", timeout=10)
    posted = httpx.post(stack.url + "/metadata", json={}, timeout=10)
    assert got.status_code == posted.status_code == 200
    assert got.json() == posted.json()
    md = got.json()
    client = MlflowClient(tracking_uri=stack.paths.tracking_uri, registry_uri=stack.paths.tracking_uri)
    champion = client.get_model_version_by_alias(stack.model_name, "champion")
    from features.compute import feature_set_hash

    assert md["model_name"] == stack.model_name
    assert md["model_version"] == str(champion.version)
    assert md["alias"] == "champion"
    assert md["run_id"] == champion.run_id
    assert md["feature_set_hash"] == feature_set_hash(FeatureParams())
    assert (md["train_start"], md["train_end"]) == ("2023-01-01T00:00:00+00:00", "2023-01-20T00:00:00+00:00")
    assert md["trained_at"] == "2024-01-01T00:00:00+00:00"
    assert md["timeframe"] == "1h"


def _metric_samples(stack: Stack) -> list:
    text = httpx.get(stack.url + "/metrics", timeout=10).text
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def test_metrics_expose_requests_latency_and_prob_up_per_model_version(stack):
    version = _current_version(stack)
    before = {s.labels.get("le"): s.value for s in _metric_samples(stack)
              if s.name == "qt_serving_prob_up_bucket" and s.labels.get("model_version") == version}
    assert _post_signals(stack, FRESH).status_code == 200
    samples = _metric_samples(stack)

    def value(name, **labels):
        hits = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        return hits[0] if hits else None

    assert value("qt_serving_requests_total", endpoint="signals", model_version=version, status="200") >= 1
    assert value("qt_serving_requests_total", endpoint="signals", model_version="none", status="503") >= 1
    assert value("qt_serving_request_latency_seconds_count", endpoint="signals", model_version=version) >= 1
    # the three probabilities just served all land in the +Inf bucket of this version
    assert value("qt_serving_prob_up_bucket", model_version=version, le="+Inf") - before.get("+Inf", 0.0) == 3
    assert value("qt_serving_model_reloads_total", model_version=stack.v1) == 1


def test_eight_symbol_batch_and_latency_report(stack):
    """One call answers all eight symbols; p50 latencies are printed for the report (run with -s)."""

    def p50(symbols) -> float:
        times = []
        with httpx.Client(timeout=30) as c:
            for _ in range(25):
                t0 = time.perf_counter()
                r = c.post(stack.url + "/signals", json={"symbols": symbols})
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200 and len(r.json()["signals"]) == len(symbols)
        return statistics.median(times) * 1000

    one, eight = p50(["BTC/USDT"]), p50(support.EIGHT_SYMBOLS)
    print(f"\n[serving latency] /signals p50 over loopback: 1 symbol {one:.1f} ms, 8 symbols {eight:.1f} ms")


# ---------------------------------------------------------------- champion moves (run last)


def test_hot_reload_switches_version_without_failed_requests(stack):
    """v2 also declares a return window of 40 bars: the service must then read more than
    history_bars (300 < warm-up 270 + 40) and hand the model its seq_ret_* columns."""
    assert _current_version(stack) == stack.v1
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(stack.url + "/signals", json={"symbols": FRESH})
                    results.append((r.status_code, r.json().get("model_version")))
                except httpx.HTTPError as exc:
                    results.append((-1, repr(exc)))

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        v2 = support.register_toy_champion(stack.paths, stack.model_name, K_V2, sequence_length=40)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(v == v2 for _, v in results) < 10:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    versions = [v for _, v in results]
    assert versions[0] == stack.v1 and versions[-1] == v2
    switch = versions.index(v2)
    assert set(versions[:switch]) == {stack.v1} and set(versions[switch:]) == {v2}  # one clean switch
    # the new champion is what decides now
    sig = _post_signals(stack, ["BTC/USDT"]).json()["signals"][0]
    assert sig["confidence"] == pytest.approx(_hand_prob(stack, "BTC/USDT", LAST_BAR, K_V2), rel=1e-9)
    meta = httpx.get(stack.url + "/metadata", timeout=10).json()
    assert meta["sequence_length"] == 40 and meta["feature_columns"][-1] == "seq_ret_39"
    # 270 + 40 candles are needed now: 309 bars into the lake is one too few, 310 enough
    first = LAST_BAR - pd.Timedelta(hours=699)
    short = _post_signals(stack, ["BTC/USDT"], (first + pd.Timedelta(hours=308)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert short.status_code == 422 and "need 310" in short.json()["error"], short.text
    assert _post_signals(stack, ["BTC/USDT"],
                         (first + pd.Timedelta(hours=309)).strftime("%Y-%m-%dT%H:%M:%SZ")).status_code == 200
    reloads = [s.value for s in _metric_samples(stack)
               if s.name == "qt_serving_model_reloads_total" and s.labels.get("model_version") == v2]
    assert reloads == [1.0]


def test_removing_the_champion_alias_stops_serving(stack):
    client = MlflowClient(tracking_uri=stack.paths.tracking_uri, registry_uri=stack.paths.tracking_uri)
    version = _current_version(stack)
    client.delete_registered_model_alias(stack.model_name, "champion")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and httpx.get(stack.url + "/readyz", timeout=5).status_code == 200:
            time.sleep(0.2)
        assert httpx.get(stack.url + "/readyz", timeout=5).status_code == 503
        resp = _post_signals(stack, ["BTC/USDT"])
        assert resp.status_code == 503 and "no champion" in resp.json()["error"]
    finally:
        client.set_registered_model_alias(stack.model_name, "champion", version)
