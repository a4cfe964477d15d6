"""Retry arithmetic and the retry loop: bounded waits, give-up, Retry-After honoured."""

import random

import pytest

from qt.backoff import backoff_ceiling_s, backoff_delay_s, parse_retry_after_s, retry_call, wait_before_retry_s


@pytest.mark.parametrize("attempt, base_s, cap_s, ceiling_s", [
    (1, 0.5, 8.0, 0.5),
    (2, 0.5, 8.0, 1.0),
    (3, 0.5, 8.0, 2.0),
    (4, 0.5, 8.0, 4.0),
    (5, 0.5, 8.0, 8.0),
    (6, 0.5, 8.0, 8.0),   # capped
    (200, 0.5, 8.0, 8.0),  # no overflow for absurd attempt numbers
    (1, 1.0, 1.0, 1.0),
])
def test_backoff_ceiling_doubles_then_caps(attempt, base_s, cap_s, ceiling_s):
    assert backoff_ceiling_s(attempt, base_s, cap_s) == ceiling_s


def test_full_jitter_delay_stays_within_zero_and_the_ceiling_and_spreads():
    rng = random.Random(1)
    for attempt in range(1, 8):
        ceiling = backoff_ceiling_s(attempt, 0.5, 8.0)
        draws = [backoff_delay_s(attempt, 0.5, 8.0, rng) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # full jitter: both halves of [0, ceiling] are used (clients do not retry in lock step)
        assert min(draws) < 0.25 * ceiling and max(draws) > 0.75 * ceiling


def test_server_retry_after_is_never_undercut():
    rng = random.Random(2)
    assert all(wait_before_retry_s(1, 0.5, 8.0, rng, 3.0) == 3.0 for _ in range(50))
    assert all(wait_before_retry_s(1, 0.5, 8.0, rng, None) <= 0.5 for _ in range(50))


@pytest.mark.parametrize("value, seconds", [("2", 2.0), (" 1.5 ", 1.5), (None, None), ("soon", None), ("-1", None)])
def test_retry_after_header_parsing(value, seconds):
    assert parse_retry_after_s(value) == seconds


@pytest.mark.parametrize("bad", [dict(attempt=0), dict(base_s=0.0), dict(cap_s=0.1)])
def test_nonsensical_backoff_inputs_are_refused(bad):
    args = {"attempt": 1, "base_s": 0.5, "cap_s": 8.0, **bad}
    with pytest.raises(ValueError):
        backoff_ceiling_s(**args)


class Flaky:
    def __init__(self, failures, exc=TimeoutError):
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "ok"


def _retry(fn, max_attempts=4, retry_after=None):
    sleeps, retries = [], []
    out = retry_call(fn, is_retryable=lambda e: isinstance(e, TimeoutError), max_attempts=max_attempts,
                     base_s=0.5, cap_s=8.0, sleep=sleeps.append, rng=random.Random(3),
                     retry_after_s=retry_after, on_retry=lambda a, e, w: retries.append((a, w)))
    return out, sleeps, retries


def test_retries_transient_failures_then_returns():
    fn = Flaky(2)
    out, sleeps, retries = _retry(fn)
    assert out == "ok" and fn.calls == 3
    assert [a for a, _ in retries] == [1, 2] and sleeps == [w for _, w in retries]
    assert sleeps[0] <= 0.5 and sleeps[1] <= 1.0


def test_gives_up_after_max_attempts_with_the_last_error():
    fn = Flaky(10)
    with pytest.raises(TimeoutError, match="failure 4"):
        _retry(fn, max_attempts=4)
    assert fn.calls == 4


def test_non_retryable_error_is_not_retried():
    fn = Flaky(1, exc=KeyError)
    with pytest.raises(KeyError):
        _retry(fn)
    assert fn.calls == 1


def test_retry_after_from_the_error_sets_the_wait():
    fn = Flaky(1)
    _, sleeps, _ = _retry(fn, retry_after=lambda e: 5.0)
    assert sleeps == [5.0]
