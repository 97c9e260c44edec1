"""The HTML period report in a real browser: screenshot, print to PDF, read back.

The metrics service runs under uvicorn on a loopback port, on the test's database
holding the hand-computed November 2026 of `test_metrics_reports`. Debian's
chromium, driven by Playwright, opens `GET /v1/reports?...&format=html` with a
dispatcher's token, takes a full-page screenshot, and prints the page to PDF
(A4). pypdfium2 then reads the PDF back: one page per report section, each
page's text holding its section's heading, the first page the known first-time
fix rate (50.0 %, down 25.0 pp), and every page rendered to PNG with ink on it.
Artifacts: `test-artifacts/report.png`, `report.pdf`, `report-page-<n>.png`.

Playwright's own browser downloads are never used (`playwright install` is not
run): without /usr/bin/chromium (`apt-get install chromium`) the test is skipped.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path
from typing import Final

import pypdfium2
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.app import create_app
from shared.settings import CommonSettings
from tests.e2e.browser import CHROMIUM, chromium
from tests.integration.metrics_io import (
    all_events,
    dispatcher,
    metrics_settings,
    served,
)
from tests.integration.test_metrics_reports import apply, month_orders

MISSING_CHROMIUM: Final = (
    f"REPORT BROWSER TEST NOT RUN: {CHROMIUM} is missing. Install Debian's "
    "chromium (`apt-get install -y chromium`, as .ci/run does when it runs as "
    "root); Playwright's own browser downloads are not used."
)
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS: Final = 30_000
# The sections' headings, one printed page each, in order.
HEADINGS: Final = (
    "Quality report 2026-11",
    "By region",
    "By category",
    "Technician ranking",
    "Alerts opened and closed",
    "Stability",
)
INK_BELOW: Final = 200  # a grey level darker than this is ink, not paper

if not CHROMIUM.exists():
    # Also in the warnings summary, which pytest prints without -rs.
    warnings.warn(MISSING_CHROMIUM, stacklevel=1)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING_CHROMIUM),
]


def grey_png(pixels: bytes, width: int, height: int, stride: int) -> bytes:
    """An 8-bit greyscale PNG of a bitmap's rows (stdlib only: zlib and struct)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + pixels[y * stride : y * stride + width] for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def read_back(pdf: Path) -> list[tuple[str, float]]:
    """Per page: its text, and the share of its pixels that are ink; each page
    is also left as a PNG beside the PDF."""
    document = pypdfium2.PdfDocument(str(pdf))
    pages = []
    try:
        for number in range(len(document)):
            page = document[number]
            text = page.get_textpage().get_text_range()
            bitmap = page.render(scale=1.5, grayscale=True)
            assert bitmap.n_channels == 1, bitmap.mode
            width, height, stride = bitmap.width, bitmap.height, bitmap.stride
            pixels = bytes(bitmap.buffer)
            (ARTIFACTS / f"report-page-{number + 1}.png").write_bytes(
                grey_png(pixels, width, height, stride)
            )
            ink = sum(
                value < INK_BELOW
                for y in range(height)
                for value in pixels[y * stride : y * stride + width]
            )
            pages.append((text, ink / (width * height)))
    finally:
        document.close()
    return pages


async def test_the_html_report_prints_one_page_per_section_in_chromium(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    await apply(engine, all_events(month_orders()))
    app = create_app(metrics_settings(settings, run_consumer=False))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot, pdf = ARTIFACTS / "report.png", ARTIFACTS / "report.pdf"
    async with served(app) as base_url, chromium() as browser:
        context = await browser.new_context(
            viewport={"width": 1100, "height": 900},
            locale="en-US",
            extra_http_headers=dispatcher(settings),
        )
        context.set_default_timeout(WAIT_MS)
        page = await context.new_page()
        fetched: list[str] = []
        page.on("request", lambda request: fetched.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        response = await page.goto(
            f"{base_url}/v1/reports?period=month&at=2026-11&format=html"
        )
        assert response is not None
        assert response.status == 200, await response.text()
        assert await page.title() == "Quality report 2026-11"
        assert await page.locator("section").count() == len(HEADINGS)
        await page.screenshot(path=str(screenshot), full_page=True)
        await page.pdf(path=str(pdf), format="A4", print_background=True)
        await context.close()
    # Self-contained: the page fetched nothing but itself, and threw nothing.
    assert len(fetched) == 1, fetched
    assert errors == []
    assert screenshot.stat().st_size > 10_000

    pages = read_back(pdf)
    assert len(pages) == len(HEADINGS), [text[:60] for text, _ in pages]
    for (text, ink), heading in zip(pages, HEADINGS, strict=True):
        assert heading in text, (heading, text[:300])
        assert ink > 0.002, (heading, ink)  # not a blank page
    summary = pages[0][0]
    # The known figures of November against October (test_metrics_reports).
    for shown in ("First-time fix", "50.0 %", "75.0 %", "\u221225.0 pp", "5 min 00 s"):
        assert shown in summary, shown
    assert "north" in pages[1][0]
    assert "south" in pages[1][0]
    assert "tech-n" in pages[3][0]
