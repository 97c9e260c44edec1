"""The running stack seen from the command line: tokens and HTTP calls.

Tokens are minted from the secret in the stack's home (never made here: see
`services.stack.home`); the calls go to the URLs `servicetrail up` recorded there.
Answers are the services' own JSON, so `--json` output is the HTTP contract's.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import httpx

from services.stack import configured_jwt_secret, read_jwt_secret, write_private
from services.stack.home import TOKENS_FILE, RecordedStack, find_home, recorded_stack
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings

# Orders and alert cases are the dispatcher's: one role reads and acts on both.
OPERATOR_ROLE: Final = Role.DISPATCHER
TIMEOUT_SECONDS: Final = 10.0
_NOT_IN_A_SUBJECT: Final = re.compile(r"[^A-Za-z0-9._@-]")


class StackUnreachable(ConnectionError):
    """The stack recorded in the home does not answer (not running)."""


class ProblemAnswer(RuntimeError):
    """A service refused the call with a problem (RFC 9457)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail

    @classmethod
    def of(cls, response: httpx.Response) -> ProblemAnswer:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return cls(
            response.status_code,
            str(body.get("title") or response.reason_phrase),
            str(body.get("detail") or ""),
        )


def mint_token(home: Path, *, role: Role, subject: str) -> str:
    """A bearer token the stack in `home` accepts (12 h)."""
    return _issue(read_jwt_secret(home), role=role, subject=subject)


def token_for(explicit_home: Path | None, *, role: Role, subject: str) -> str:
    """A token for the stack meant: signed with JWT_SECRET when it is set (no home
    needed), else with the secret of the home `find_home` finds.

    Raises:
        StackNotFound: no JWT_SECRET, and no stack home there.
        ValueError: a subject or role the services would refuse.
    """
    secret = configured_jwt_secret() or read_jwt_secret(find_home(explicit_home))
    return _issue(secret, role=role, subject=subject)


def _issue(secret: str, *, role: Role, subject: str) -> str:
    return issue_token(CommonSettings(jwt_secret=secret), role=role, subject=subject)


# The subject of each role's token that `servicetrail up` hands out.
DEMO_SUBJECTS: Final = {
    Role.CUSTOMER: "demo-customer-1",
    Role.TECHNICIAN: "demo-technician-1",
    Role.DISPATCHER: "demo-dispatcher",
    Role.AUDITOR: "demo-auditor",
    Role.ADMIN: "demo-admin",
    Role.SERVICE: "demo-service",
}


@dataclass(frozen=True, slots=True)
class RoleToken:
    role: Role
    subject: str
    token: str

    @property
    def variable(self) -> str:
        """Its shell variable: DISPATCHER_TOKEN, ..."""
        return f"{self.role.value.upper()}_TOKEN"

    def lines(self) -> tuple[str, str]:
        """A comment naming the subject, then VARIABLE=token (shell and env-file)."""
        return f"# {self.role.value} {self.subject}", f"{self.variable}={self.token}"


def role_tokens(home: Path) -> list[RoleToken]:
    """One token per role for the stack in `home`, with the demo subjects."""
    return [
        RoleToken(role, subject, mint_token(home, role=role, subject=subject))
        for role, subject in DEMO_SUBJECTS.items()
    ]


def write_tokens_file(home: Path, tokens: Sequence[RoleToken]) -> Path:
    """`home`/tokens.env (mode 0600): the lines `servicetrail up` prints."""
    path = home / TOKENS_FILE
    write_private(path, "".join(f"{line}\n" for t in tokens for line in t.lines()))
    return path


def dashboard_link(dashboard_url: str, token: str, auditor_token: str) -> str:
    """The dashboard's URL that signs in with `token` (the page reads #token=).

    `auditor=` lets the page verify an order's ledger chain and its inclusion proof,
    which only an auditor may ask for.
    """
    return f"{dashboard_url}#token={token}&auditor={auditor_token}"


def operator_subject() -> str:
    """`cli:<login>`: who took a step (an acknowledgement) from this terminal."""
    try:
        login = _NOT_IN_A_SUBJECT.sub("-", getpass.getuser())[:100]
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        login = ""
    return f"cli:{login or 'operator'}"


@dataclass(frozen=True, slots=True)
class StackClient:
    """Calls to the services of one running stack, as the operator."""

    stack: RecordedStack
    token: str
    """The operator's bearer token (12 h)."""
    http: httpx.Client

    def _call(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        base = self.stack.services[service]
        try:
            response = self.http.request(method, f"{base}{path}", **kwargs)
        except httpx.TransportError as err:
            raise StackUnreachable(
                f"No stack answers at {base} ({service}, as recorded in "
                f"{self.stack.home}): start it with `servicetrail up`. ({err})"
            ) from None
        if response.is_error:
            raise ProblemAnswer.of(response)
        return response.json()

    def check_running(self) -> None:
        """Raises StackUnreachable unless the dashboard's service answers."""
        self._call("GET", "metrics", "/healthz")

    def _items(self, service: str, path: str, **params: Any) -> list[dict[str, Any]]:
        """The first page of a listing (its `items`); None parameters left out."""
        given = {name: value for name, value in params.items() if value is not None}
        page = self._call("GET", service, path, params=given)
        items: list[dict[str, Any]] = page["items"]
        return items

    def _document(self, method: str, service: str, path: str) -> dict[str, Any]:
        document: dict[str, Any] = self._call(method, service, path)
        return document

    def list_orders(
        self, *, statuses: Sequence[str], region: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The newest `limit` orders with one of `statuses` (any if empty)."""
        return self._items(
            "intake", "/v1/orders", status=list(statuses), region=region, limit=limit
        )

    def get_order(self, order_id: UUID) -> dict[str, Any]:
        return self._document("GET", "intake", f"/v1/orders/{order_id}")

    def get_timeline(self, order_id: UUID) -> dict[str, Any]:
        return self._document("GET", "intake", f"/v1/orders/{order_id}/timeline")

    def list_alerts(self, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` alerts (in `state`, if given) with their cases."""
        return self._items("metrics", "/v1/alerts", state=state, limit=limit)

    def acknowledge_alert(self, alert_id: UUID) -> dict[str, Any]:
        """The alert's case once acknowledged by the operator."""
        return self._document("POST", "metrics", f"/v1/alerts/{alert_id}/acknowledge")


@contextmanager
def stack_client(home: Path) -> Iterator[StackClient]:
    """A client of the stack in `home`, calling as the operator (a dispatcher).

    Raises:
        StackNotFound: no stack ever started in `home`.
    """
    stack = recorded_stack(home)
    token = mint_token(home, role=OPERATOR_ROLE, subject=operator_subject())
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=TIMEOUT_SECONDS) as http:
        yield StackClient(stack, token, http)
