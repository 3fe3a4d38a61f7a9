"""Login throttling (podod.api.throttle) on a clock the test moves: delays double and are
capped, the lockout spares the addresses an account knows, old failures are forgotten and
memory stays bounded."""

from __future__ import annotations

import pytest

from podod.api import throttle as throttle_module
from podod.api.auth_settings import LoginThrottleSettings
from podod.api.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**settings: object) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    values = LoginThrottleSettings.model_validate(settings)
    return LoginThrottle(lambda: values, clock=clock), clock


def test_delays_start_after_the_free_failures_double_and_are_capped() -> None:
    throttle, clock = make(free_failures=2, base_delay="2s", max_delay="10s",
                           lockout_failures=1000)
    waits = []
    for _ in range(6):
        assert throttle.check("alice", "a", known=False) is None
        throttle.failed("alice", "a")
        verdict = throttle.check("alice", "a", known=False)
        waits.append(verdict.wait if verdict else 0.0)
        clock.now += 100  # past any wait, inside the window
    assert waits == [0.0, 0.0, 2.0, 4.0, 8.0, 10.0]


def test_an_address_waits_whatever_account_it_tries() -> None:
    throttle, clock = make(free_failures=1, base_delay="5s")
    throttle.failed("alice", "a")
    throttle.failed("bob", "a")
    verdict = throttle.check("carol", "a", known=True)
    assert verdict is not None and verdict.reason == "address" and verdict.retry_after == 5
    assert throttle.check("carol", "b", known=False) is None
    clock.now += 5
    assert throttle.check("carol", "a", known=False) is None


def test_lockout_spares_known_addresses_and_ends() -> None:
    throttle, clock = make(free_failures=100, lockout_failures=3, lockout_time="10m")
    for address in ("x", "y", "z"):
        throttle.failed("alice", address)
    locked = throttle.check("alice", "elsewhere", known=False)
    assert locked is not None and locked.reason == "locked" and locked.wait == 600
    assert throttle.check("alice", "home", known=True) is None
    assert throttle.check("bob", "elsewhere", known=False) is None
    clock.now += 600
    assert throttle.check("alice", "elsewhere", known=False) is None


def test_success_clears_only_its_pair_and_unlock_clears_the_account() -> None:
    throttle, _clock = make(free_failures=0, base_delay="1m", lockout_failures=2)
    throttle.failed("alice", "a")
    throttle.failed("alice", "b")
    throttle.succeeded("alice", "a")
    assert ("alice", "a") not in throttle.by_pair
    assert throttle.check("alice", "a", known=False) is not None  # the address still waits
    assert throttle.check("alice", "c", known=False) is not None  # and the account is locked
    throttle.clear_account("alice")
    assert throttle.check("alice", "c", known=False) is None
    assert ("alice", "b") not in throttle.by_pair


def test_old_failures_are_forgotten() -> None:
    throttle, clock = make(free_failures=1, base_delay="1s", window="1h")
    throttle.failed(None, "a")
    throttle.failed(None, "a")
    clock.now += 3601
    throttle.failed(None, "a")
    assert throttle.by_address["a"].count == 1
    assert throttle.check(None, "a", known=False) is None


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle_module, "MAX_ENTRIES", 100)
    throttle, _clock = make()
    for n in range(1000):
        throttle.failed(f"name{n}", f"10.0.{n // 256}.{n % 256}")
    assert len(throttle.by_address) == len(throttle.by_pair) == len(throttle.by_account) == 100
    assert "name999" in throttle.by_account and "name0" not in throttle.by_account
