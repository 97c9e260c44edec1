"""The moving window behind the per-caller rate limit, on a clock the test moves."""

from __future__ import annotations

from shared.http.rate_limit import MovingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_gets_amount_requests_in_any_window_and_no_more() -> None:
    clock = Clock()
    window = MovingWindow(3, 10, clock=clock)
    for _ in range(3):
        assert window.fits("a", 1)
        window.count("a", 1)
        clock.now += 1
    assert not window.fits("a", 1)
    assert window.fits("b", 3)  # another caller has a budget of its own
    # The first request (t=1000) leaves the window at t=1010, 7 s from now.
    assert window.seconds_until_reset("a") == 7
    clock.now = 1010
    assert window.fits("a", 1)
    assert not window.fits("a", 2)  # t=1001 and t=1002 are still inside


def test_a_cost_counts_as_that_many_requests() -> None:
    clock = Clock()
    window = MovingWindow(5, 60, clock=clock)
    window.count("a", 4)
    assert window.fits("a", 1)
    assert not window.fits("a", 2)
    # Over the whole amount it never fits: retry after a whole window.
    assert not window.fits("new", 6)
    assert window.seconds_until_reset("new") == 60


def test_callers_idle_for_a_window_are_forgotten() -> None:
    clock = Clock()
    window = MovingWindow(2, 10, clock=clock)
    window.count("gone", 1)
    clock.now += 5
    window.count("active", 1)
    clock.now += 6  # past the first sweep; "gone" is out of the window
    window.count("active", 1)
    assert set(window._arrivals) == {"active"}
    assert not window.fits("active", 1)
