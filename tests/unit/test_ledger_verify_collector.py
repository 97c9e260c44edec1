"""A whole-ledger verify pauses the cyclic garbage collector and gives it back.

The pause is process-wide, so what matters is the state it leaves behind, also when
two passes overlap (two verify streams served by one process).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.ledger.queries import _collector_paused


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_during_a_pass_and_on_after_it() -> None:
    gc.enable()
    with _collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_is_on_again_after_a_pass_that_failed() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), _collector_paused():
        raise RuntimeError("the connection dropped")
    assert gc.isenabled()


def test_overlapping_passes_leave_the_collector_on_whichever_ends_first() -> None:
    gc.enable()
    first, second = _collector_paused(), _collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert gc.isenabled()
    first, second = _collector_paused(), _collector_paused()
    first.__enter__()
    second.__enter__()
    second.__exit__(None, None, None)
    assert not gc.isenabled()  # the first pass still runs
    first.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pass_leaves_a_collector_it_found_off_off() -> None:
    gc.disable()
    with _collector_paused():
        pass
    assert not gc.isenabled()
