"""WindowThrottle and client_address: limits, windows, bounded state, proxies."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.requests import Request

from gateway.auth.throttles import Tarpit, WindowThrottle, client_address
from quarry.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, *, limit: int = 3, max_in_flight: int = 2, max_keys: int = 100) -> WindowThrottle:
    return WindowThrottle(
        limit=limit,
        window_seconds=60,
        max_in_flight=max_in_flight,
        max_keys=max_keys,
        refusal="Too many failures",
        clock=clock,
    )


def test_a_key_at_its_limit_is_refused_until_its_window_ends() -> None:
    clock = Clock()
    failures = throttle(clock)
    for _ in range(3):
        failures.check("203.0.113.7")
        failures.count("203.0.113.7")
    clock.now += 20
    with pytest.raises(RateLimited) as refused:
        failures.check("203.0.113.7")
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "40"
    assert refused.value.extensions == {"limit": "failed_authentications", "retry_after": 40}
    failures.check("198.51.100.1")  # another key is not affected

    clock.now += 40
    failures.check("203.0.113.7")
    failures.count("203.0.113.7")  # a new window: one failure of three
    failures.check("203.0.113.7")


def test_attempts_in_flight_are_capped_and_released() -> None:
    failures = throttle(Clock(), max_in_flight=2)
    with failures.attempt("k"), failures.attempt("k"):
        with pytest.raises(RateLimited) as refused, failures.attempt("k"):
            pass
        assert refused.value.extensions["limit"] == "authentications_in_flight"
        assert refused.value.headers["Retry-After"] == "1"
    with failures.attempt("k"), failures.attempt("k"):
        pass


def test_an_attempt_over_the_limit_is_refused_before_it_starts() -> None:
    failures = throttle(Clock(), limit=1)
    failures.count("k")
    with pytest.raises(RateLimited), failures.attempt("k"):
        raise AssertionError("the attempt ran")


def test_the_state_is_bounded_whatever_the_number_of_keys() -> None:
    clock = Clock()
    failures = throttle(clock, limit=1, max_keys=100)
    failures.count("target")
    for index in range(1000):
        failures.count(f"10.0.{index // 256}.{index % 256}")
        if index < 50:
            with pytest.raises(RateLimited):
                failures.check("target")  # recently used: kept
    assert len(failures) == 100
    failures.check("target")  # the least recently used were dropped, the target among them


def test_a_flood_of_held_refusals_is_answered_at_a_bounded_rate() -> None:
    tarpit = Tarpit(hold_seconds=0.05, max_refusals_per_second=100)
    assert tarpit.seconds() == 0.05  # a few refusals: the usual hold

    async def flood() -> float:
        started = time.perf_counter()
        held = [asyncio.create_task(tarpit.hold()) for _ in range(200)]
        await asyncio.sleep(0)
        assert tarpit.held == 200 and tarpit.seconds() == pytest.approx(2.0)
        await asyncio.gather(*held)
        return time.perf_counter() - started

    # 200 held at once leave over about 2 s (x0.5 to x1.5): about 100 a second, not 200 at once.
    assert asyncio.run(flood()) >= 1.0
    assert tarpit.held == 0


def request(peer: str, headers: dict[str, str] | list[tuple[str, str]] | None = None) -> Request:
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(name.lower().encode(), value.encode()) for name, value in pairs],
            "client": (peer, 50000),
        }
    )


def test_without_a_trusted_header_the_socket_peer_counts_and_headers_are_ignored() -> None:
    spoofed = request("192.0.2.10", {"X-Forwarded-For": "198.51.100.99"})
    assert client_address(spoofed, trusted_header=None, hops=1) == "192.0.2.10"


@pytest.mark.parametrize(
    ("forwarded", "hops", "expected"),
    [
        ("198.51.100.7", 1, "198.51.100.7"),
        ("6.6.6.6, 198.51.100.7", 1, "198.51.100.7"),  # the client's own claim (left) is not trusted
        ("6.6.6.6, 198.51.100.7, 10.0.0.2", 2, "198.51.100.7"),
        ("198.51.100.7", 2, "198.51.100.7"),  # fewer entries than hops: the first proxy's view
        ("2001:db8:1:2:aaaa::1", 1, "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", 1, "198.51.100.7"),
        ("", 1, "192.0.2.10"),  # empty header: the socket peer
    ],
)
def test_behind_trusted_proxies_the_address_they_saw_counts(forwarded: str, hops: int, expected: str) -> None:
    proxied = request("192.0.2.10", {"X-Forwarded-For": forwarded})
    assert client_address(proxied, trusted_header="x-forwarded-for", hops=hops) == expected


def test_repeated_headers_read_as_one_list() -> None:
    proxied = request("192.0.2.10", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")])
    assert client_address(proxied, trusted_header="x-forwarded-for", hops=1) == "198.51.100.7"


def test_two_addresses_in_one_ipv6_64_count_as_one() -> None:
    first = client_address(request("2001:db8:0:1::5"), trusted_header=None, hops=1)
    second = client_address(request("2001:db8:0:1:ffff::9"), trusted_header=None, hops=1)
    assert first == second == "2001:db8:0:1::/64"
