"""The alt series' Great Expectations suites: the shared files pass; an out-of-range value, a duplicate
day, a stale series and a corrupt partition each fail, naming the series and the expectation."""

from __future__ import annotations

import pandas as pd
import pytest

from data.alt_lake import alt_dir, with_availability, write_alt
from data.validate_alt import alt_record, require_alt_validated, validate_alt, validate_alt_lake
from qt.config import AltParams
from qt.errors import DataError

END = pd.Timestamp("2024-01-10 23:00", tz="UTC")
DAYS = pd.date_range("2024-01-01", "2024-01-10", freq="D", tz="UTC")


def _fng(values=None, days=DAYS):
    values = values if values is not None else [float(10 + i) for i in range(len(days))]
    return with_availability(pd.DataFrame({"timestamp": days, "value": values, "classification": "x"}), "fear_greed")


def _onchain(mvrv=2.0, nupl=0.5):
    return with_availability(pd.DataFrame({"timestamp": DAYS, "mvrv": mvrv, "nupl": nupl, "realized_price": 100.0,
                                           "etf_flow_usd": float("nan")}), "onchain_btc")


def _failed(report):
    return {(f.symbol, f.expectation, f.column) for f in report.errors}


def test_clean_series_pass():
    for name, frame in (("fear_greed", _fng()), ("onchain_btc", _onchain())):
        assert validate_alt(frame, name, AltParams(), END).success


def test_out_of_range_values_fail():
    bad = _fng(values=[50.0] * 9 + [101.0])
    assert ("alt:fear_greed", "expect_column_values_to_be_between", "value") in _failed(
        validate_alt(bad, "fear_greed", AltParams(), END))
    report = validate_alt(_onchain(mvrv=-1.0, nupl=1.5), "onchain_btc", AltParams(), END)
    assert {("alt:onchain_btc", "expect_column_values_to_be_between", c) for c in ("mvrv", "nupl")} <= _failed(report)


def test_a_duplicate_day_fails():
    frame = pd.concat([_fng(), _fng().iloc[[3]]], ignore_index=True)
    report = validate_alt(frame, "fear_greed", AltParams(), END)
    assert any(e == "expect_compound_columns_to_be_unique" for _, e, _ in _failed(report))


def test_a_stale_series_fails_relative_to_the_data_end():
    old = _fng(days=DAYS[:5])  # newest value 2024-01-05, data end 2024-01-10 23:00: 5.96 days
    assert ("alt:fear_greed", "expect_column_values_to_be_between", "stale_days") in _failed(
        validate_alt(old, "fear_greed", AltParams(max_staleness_days=3.0), END))
    assert validate_alt(old, "fear_greed", AltParams(max_staleness_days=6.0), END).success


def test_a_corrupt_partition_quarantines_its_series_and_the_features_refuse_it(tmp_path):
    write_alt(tmp_path, "fear_greed", _fng())
    write_alt(tmp_path, "onchain_btc", _onchain())
    (alt_dir(tmp_path, "fear_greed") / "2024.parquet").write_bytes(b"not parquet")
    report = validate_alt_lake(tmp_path, ["fear_greed", "onchain_btc"], AltParams(), END)
    assert report.quarantined == ["alt:fear_greed"]
    record = {"alt": alt_record(report)}
    assert record["alt"]["series"] == {"fear_greed": "quarantined", "onchain_btc": "passed"}
    require_alt_validated(record, ["onchain_btc"])
    with pytest.raises(DataError, match="fear_greed.*quarantined"):
        require_alt_validated(record, ["fear_greed"])


def test_the_shared_alt_files_pass_their_suites(tmp_path):
    from data.alt_collect import collect_alt
    from qt.config import Params
    from tests.support import require_shared_data

    shared = require_shared_data()
    if not (shared / "alt").is_dir():
        pytest.skip(f"{shared / 'alt'} absent: the shared alt files are needed")
    params = Params(alt={"series": ["fear_greed", "onchain_btc", "headlines"], "source": f"parquet:{shared}"})
    collect_alt(params, tmp_path)
    report = validate_alt_lake(tmp_path, params.alt.series, params.alt, pd.Timestamp("2024-12-31 23:00", tz="UTC"))
    assert report.success, report.describe()
