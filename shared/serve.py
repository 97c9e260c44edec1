"""Run one service process with uvicorn (used by every `python -m services.<name>`)."""

from __future__ import annotations

import gc
import logging
from typing import Final

import uvicorn
from fastapi import FastAPI

from shared.settings import CommonSettings

# Allocations beyond deallocations of container objects between two young
# collections (CPython's default is 700). Under load the requests in flight hold a
# few thousand such objects, so at 700 a collection ran every ~20 ms while few
# cycles died: 7% of intake's CPU at 64 connections (gc.callbacks, thread_time).
# At 10,000: 3 collections in 25 s, ~5 ms of CPU each.
YOUNG_COLLECTION_THRESHOLD: Final = 10_000


def tune_collector() -> None:
    """The garbage collector as a long-running process of ours wants it (services,
    and the CLI's whole-ledger verify).

    Everything imported and built so far lives as long as the process: frozen, it
    is left out of every later collection. Unfrozen, each full collection walked it
    all, stopping every request for ~110 ms every ~3 s under load (measured with
    gc.callbacks in intake); frozen, a full collection took ~9 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def serve(app: FastAPI, settings: CommonSettings) -> None:
    """Serve on the configured host and port; uvloop and httptools when installed."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    tune_collector()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        # The default keeps idle keep-alive connections open too briefly for clients
        # that pause between requests (mobile sync); 30 s avoids reconnect churn.
        timeout_keep_alive=30,
        # Open server-sent-event streams would otherwise hold a stop forever.
        timeout_graceful_shutdown=5,
    )
