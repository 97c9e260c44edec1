"""Where a stack keeps its home (`.stack/`), and how commands find a running one.

`servicetrail up` makes the home: `--home PATH`, else `SERVICETRAIL_HOME`, else
`./.stack`. Every other command finds it the way git finds `.git`: `--home PATH` or
`SERVICETRAIL_HOME`, else the nearest `.stack/` in the current directory or a
parent. Finding never creates anything: a command run where no stack ever started
must say so (`StackNotFound`), not make a new secret there and mint tokens the
running stack rejects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

HOME_ENV: Final = "SERVICETRAIL_HOME"
HOME_DIRECTORY: Final = ".stack"
STATE_FILE: Final = "stack.json"
JWT_SECRET_FILE: Final = "jwt-secret"  # noqa: S105 - a file name
TOKENS_FILE: Final = "tokens.env"


class StackNotFound(LookupError):
    """No stack home where one was looked for; the message says where and what to do."""


def home_to_start(explicit: Path | None = None) -> Path:
    """The home `servicetrail up` uses (and creates)."""
    chosen = explicit or os.environ.get(HOME_ENV) or HOME_DIRECTORY
    return Path(chosen).resolve()


def _holds_a_stack(directory: Path) -> bool:
    return (directory / STATE_FILE).is_file() or (directory / JWT_SECRET_FILE).is_file()


def find_home(explicit: Path | None = None, *, cwd: Path | None = None) -> Path:
    """The home of the stack the caller means, without creating anything.

    An explicit home (`--home`, else `SERVICETRAIL_HOME`) may be the home itself or
    the directory holding its `.stack/` (a clone). Otherwise the nearest `.stack/`
    from `cwd` (default: the current directory) upwards.

    Raises:
        StackNotFound: no stack ever started there.
    """
    given = explicit or os.environ.get(HOME_ENV)
    if given:
        path = Path(given).resolve()
        for candidate in (path, path / HOME_DIRECTORY):
            if _holds_a_stack(candidate):
                return candidate
        raise StackNotFound(
            f"No ServiceTrail stack at {path}: it holds no {STATE_FILE} or "
            f"{JWT_SECRET_FILE}. Start one there with `servicetrail up --home {path}`."
        )
    start = (cwd or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / HOME_DIRECTORY).is_dir():
            return directory / HOME_DIRECTORY
    raise StackNotFound(
        f"No ServiceTrail stack runs here: no {HOME_DIRECTORY}/ in {start} or any "
        "parent. Run this inside the clone where `servicetrail up` runs, or pass "
        f"--home PATH (or set {HOME_ENV})."
    )


@dataclass(frozen=True, slots=True)
class RecordedStack:
    """What `servicetrail up` recorded in the home's stack.json about its stack."""

    home: Path
    services: dict[str, str]
    """Service name -> base URL, e.g. "metrics" -> "http://127.0.0.1:8004"."""
    database_url: str
    """Without its password; see `database_password_file`."""
    database_password_file: Path | None

    @property
    def dashboard_url(self) -> str:
        return f"{self.services['metrics']}/"


def recorded_stack(home: Path) -> RecordedStack:
    """The stack recorded in `home`.

    Raises:
        StackNotFound: no stack ever started in `home`.
    """
    try:
        recorded = json.loads((home / STATE_FILE).read_text())
    except FileNotFoundError:
        raise StackNotFound(
            f"No stack has started in {home} (no {STATE_FILE}): run `servicetrail up`."
        ) from None
    password_file = recorded.get("database_password_file")
    return RecordedStack(
        home=home,
        services=dict(recorded["services"]),
        database_url=str(recorded["database_url"]),
        database_password_file=None if password_file is None else Path(password_file),
    )
