"""What the browser tests share: Debian's chromium under Playwright, the page's
problem watcher and waits, the page's number formatting in Python, screenshots
compared with stored references.

Playwright's own browser downloads are never used (`playwright install` is not
run): without /usr/bin/chromium (`apt-get install -y chromium fonts-noto-cjk`, as
.ci/run does when it runs as root) every browser test is skipped, loudly.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Final

import pytest
from PIL import Image, ImageChops
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Response,
    async_playwright,
)
from playwright.async_api import (
    Error as PlaywrightError,
)

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Screenshots compared pixel by pixel: the same fonts' rendering every run.
    "--font-render-hinting=none",
    "--force-color-profile=srgb",
)
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts"
REFERENCES: Final = Path(__file__).resolve().parent / "screenshots"
# Set to 1 to write the screenshots as the new references instead of comparing.
UPDATE_SCREENSHOTS: Final = "SERVICETRAIL_UPDATE_SCREENSHOTS"

WAIT_MS: Final = 20_000  # any single wait in the browser
NO_VALUE: Final = "\u2013"  # the en dash the page shows for "no value"
TileTexts = dict[str, list[str]]  # indicator -> [value text, detail text]


def missing_chromium(what: str) -> str:
    return (
        f"{what} NOT RUN: {CHROMIUM} is missing. Install Debian's chromium "
        "(`apt-get install -y chromium fonts-noto-cjk`, as .ci/run does when it "
        "runs as root); Playwright's own browser downloads are not used."
    )


def needs_chromium(what: str) -> pytest.MarkDecorator:
    """Skip without Debian's chromium, and say so in the warnings summary too
    (which pytest prints without -rs)."""
    if not CHROMIUM.exists():
        warnings.warn(missing_chromium(what), stacklevel=2)
    return pytest.mark.skipif(not CHROMIUM.exists(), reason=missing_chromium(what))


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's chromium, headless, closed on the way out."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS),
            timeout=60_000,
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_board(browser: Browser) -> Dashboard:
    """A 1280 x 900 English page whose problems are watched."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-US"
    )
    context.set_default_timeout(WAIT_MS)
    board = Dashboard(await context.new_page(), Problems())
    board.problems.watch(board.page)
    return board


# --- the page's number formatting, in Python -----------------------------------------


def to_fixed(number: float, digits: int) -> str:
    """JavaScript's Number.prototype.toFixed: exact value, halves away from zero."""
    exponent = Decimal(1).scaleb(-digits)
    return f"{Decimal(number).quantize(exponent, rounding=ROUND_HALF_UP):f}"


def js_round(number: float) -> int:
    """JavaScript's Math.round: halves up."""
    return math.floor(number + 0.5)


STEPS: Final = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
UNITS_ZH: Final = {"d": "天", "h": "小时", "min": "分钟", "s": "秒"}


def human_seconds(seconds: float, *, zh: bool = False) -> str:
    """The page's humanSeconds: "42 s", "1 h 23 min", "2 d 4 h" (the two largest
    units, rounded to the smaller)."""
    unit = (lambda u: UNITS_ZH[u]) if zh else (lambda u: u)
    sign = "\u2212" if seconds < 0 else ""
    magnitude = abs(seconds)
    if magnitude < 10:
        return f"{sign}{to_fixed(magnitude, 1)} {unit('s')}"
    whole = js_round(magnitude)
    i = next(n for n, (size, _) in enumerate(STEPS) if whole >= size)
    while True:
        minor = STEPS[i + 1][0] if i + 1 < len(STEPS) else 1
        rounded = js_round(whole / minor) * minor
        if i > 0 and rounded >= STEPS[i - 1][0]:
            i -= 1
            continue
        major = rounded // STEPS[i][0]
        rest = (rounded - major * STEPS[i][0]) // minor
        text = f"{major} {unit(STEPS[i][1])}"
        if rest and i + 1 < len(STEPS):
            text += f" {rest} {unit(STEPS[i + 1][1])}"
        return sign + text


# --- the page -------------------------------------------------------------------------


@dataclass
class Problems:
    """Everything the page reported that a healthy dashboard never does."""

    found: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.found.append(f"pageerror: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        # The page reports failed API calls with console.warn, so warnings count.
        if message.type in {"error", "warning", "assert"}:
            where = message.location.get("url") or "?"
            self.found.append(f"console.{message.type}: {message.text} ({where})")

    def _failed(self, request: Request) -> None:
        self.found.append(f"request failed: {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.found.append(f"HTTP {response.status}: {response.url}")

    def assert_none(self, when: str) -> None:
        assert not self.found, f"{when}: the page reported\n" + "\n".join(self.found)


@dataclass
class Dashboard:
    page: Page
    problems: Problems

    async def wait_for(self, expression: str, what: str, arg: object = None) -> None:
        """Wait (bounded) until `expression` is truthy in the page."""
        try:
            await self.page.wait_for_function(expression, arg=arg, timeout=WAIT_MS)
        except PlaywrightError as error:
            raise AssertionError(
                f"{what}: not within {WAIT_MS} ms ({error.message.splitlines()[0]}); "
                f"the page reported: {self.problems.found}"
            ) from error

    async def tiles(self) -> TileTexts:
        texts: TileTexts = await self.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll(".tile")].map(
                (tile) => [tile.dataset.indicator, [
                  tile.querySelector(".value").textContent,
                  tile.querySelector(".sub").textContent]]))"""
        )
        return texts

    async def expect_tiles(self, expected: TileTexts, what: str) -> None:
        """Wait until every tile reads as expected; on timeout, show the difference."""
        try:
            await self.page.wait_for_function(
                """(expected) => Object.entries(expected).every(([name, [value, sub]]) => {
                  const tile = document.querySelector(`[data-indicator="${name}"]`);
                  return tile !== null
                    && tile.querySelector(".value").textContent === value
                    && tile.querySelector(".sub").textContent === sub;
                })""",
                arg=expected,
                timeout=WAIT_MS,
            )
        except PlaywrightError:
            shown = await self.tiles()
            differing = {
                name: {"page": shown.get(name), "api": texts}
                for name, texts in expected.items()
                if shown.get(name) != texts
            }
            raise AssertionError(
                f"{what}: tiles differ from the API after {WAIT_MS} ms: {differing}; "
                f"the page reported: {self.problems.found}"
            ) from None

    async def dataset(self, key: str) -> str | None:
        value: str | None = await self.page.evaluate(
            "(key) => document.body.dataset[key] ?? null", key
        )
        return value

    async def text(self, selector: str) -> str:
        return (await self.page.text_content(selector, timeout=WAIT_MS)) or ""


# --- screenshots against references ---------------------------------------------------

# A pixel differs when a channel moves by more than this (anti-aliasing moves less).
PIXEL_TOLERANCE: Final = 48
# The share of differing pixels a screenshot may have against its reference.
DIFFERENT_SHARE: Final = 0.01


def differing_share(shot: Path, reference: Path) -> float:
    """The share of pixels that differ (1.0 when the sizes differ)."""
    with Image.open(shot) as taken, Image.open(reference) as stored:
        if taken.size != stored.size:
            return 1.0
        difference = ImageChops.difference(
            taken.convert("RGB"), stored.convert("RGB")
        ).convert("L")
        histogram = difference.histogram()
        different = sum(histogram[PIXEL_TOLERANCE + 1 :])
        return different / (taken.size[0] * taken.size[1])


async def screenshot(
    board: Dashboard, name: str, *, mask: Sequence[Locator] = ()
) -> None:
    """Save `test-artifacts/<name>.png` (full page, `mask` painted over) and compare
    it with `tests/e2e/screenshots/<name>.png`; with SERVICETRAIL_UPDATE_SCREENSHOTS=1
    it becomes the reference instead."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    await board.page.mouse.move(0, 0)  # no hover state in the picture
    await board.page.screenshot(
        path=str(shot),
        full_page=True,
        mask=list(mask),
        mask_color="#334155",
        animations="disabled",
        caret="hide",
        timeout=WAIT_MS,
    )
    reference = REFERENCES / f"{name}.png"
    if os.environ.get(UPDATE_SCREENSHOTS) == "1" or not reference.exists():
        REFERENCES.mkdir(parents=True, exist_ok=True)
        reference.write_bytes(shot.read_bytes())
        if os.environ.get(UPDATE_SCREENSHOTS) != "1":
            raise AssertionError(
                f"no reference for {name}: stored {reference}; look at it, commit it"
            )
        return
    share = differing_share(shot, reference)
    assert share <= DIFFERENT_SHARE, (
        f"{name}: {share:.2%} of the pixels differ from {reference} (at most "
        f"{DIFFERENT_SHARE:.0%}); see {shot}, or set {UPDATE_SCREENSHOTS}=1 to store "
        "it as the new reference after looking at it"
    )


async def failure_screenshot(board: Dashboard, name: str) -> None:
    """A picture of the page as a test failed (best effort)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with suppress(PlaywrightError):
        await board.page.screenshot(
            path=str(ARTIFACTS / f"{name}.png"), full_page=True, timeout=WAIT_MS
        )
