"""JWT bearer authentication: tokens in, `Actor` out.

HS256 with a shared secret in the embedded stack; RS256 against a JWKS URL in
production, where `iss` and `aud` are required too. Claims: `sub`, `role`, `exp`.
Subjects are `shared.domain.actors.SUBJECT_PATTERN`, roles the product roles.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import jwt

from shared.domain.actors import PRODUCT_ROLES, Actor, Role, check_subject
from shared.http.problems import Problem
from shared.settings import MIN_SECRET_BYTES, CommonSettings, JwtAlgorithm

ISSUER: Final = "servicetrail"
AUTHORIZATION: Final = b"authorization"
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="servicetrail"'}
# Verified tokens kept per configuration: mobile apps reuse theirs for many requests.
_MAX_VERIFIED_TOKENS: Final = 8192
# After a failed JWKS fetch, new tokens are refused (503) this long without a retry.
JWKS_RETRY_SECONDS: Final = 2


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified token: who, and until when (`exp`, seconds since the epoch)."""

    actor: Actor
    expires_at: float


def issue_token(
    settings: CommonSettings,
    *,
    role: Role,
    subject: str,
    lifetime: timedelta = timedelta(hours=12),
    now: datetime | None = None,
) -> str:
    """A signed HS256 token (the embedded stack's issuer; production uses its IdP).

    Raises:
        ValueError: the role is not a product role or the subject is malformed
            (a token the services would refuse must not be issued).
    """
    if role not in PRODUCT_ROLES:
        raise ValueError(f"role {role} is not a caller's role")
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": check_subject(subject),
        "role": role.value,
        "iss": settings.jwt_issuer or ISSUER,
        "iat": issued,
        "exp": issued + lifetime,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.hs256_secret(), algorithm="HS256")


def authorization_header(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The request's one `Authorization` header; 400 problem if there are several.

    The rate limiter and the handlers must judge the same credentials: with two
    headers, each could pick a different one.
    """
    values = [value for name, value in headers if name.lower() == AUTHORIZATION]
    if len(values) > 1:
        raise Problem(
            400, "ambiguous_authorization", "Send one `Authorization` header."
        )
    return values[0].decode("latin-1") if values else None


async def authenticate(settings: CommonSettings, authorization: str | None) -> Caller:
    """The caller of an `Authorization: Bearer` header; 401 problem otherwise.

    503 problem when the identity provider's key set cannot be fetched.
    """
    if not authorization:
        raise Problem(
            401, "unauthenticated", "A bearer token is required.", headers=_CHALLENGE
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401,
            "unauthenticated",
            "Use `Authorization: Bearer <token>`.",
            headers=_CHALLENGE,
        )
    caller = await _verifier(_VerifierKey.of(settings)).verify(token)
    if caller.expires_at <= time.time():
        raise Problem(
            401,
            "invalid_token",
            "The token is not valid: Signature has expired",
            headers=_CHALLENGE,
        )
    return caller


def require_role(actor: Actor, allowed: frozenset[Role]) -> None:
    """403 unless the actor's role is allowed (admins are always allowed)."""
    if actor.role is not Role.ADMIN and actor.role not in allowed:
        raise Problem(
            403,
            "forbidden",
            f"Role {actor.role} may not do this; allowed: {', '.join(sorted(allowed))}.",
        )


@dataclass(frozen=True, slots=True)
class _VerifierKey:
    """What verification depends on: one verifier (and cache) per configuration."""

    algorithm: JwtAlgorithm
    secret: str | None
    jwks_url: str | None
    issuer: str | None
    audience: str | None
    jwks_timeout: float
    jwks_lifespan: float

    @classmethod
    def of(cls, settings: CommonSettings) -> _VerifierKey:
        return cls(
            algorithm=settings.jwt_algorithm,
            secret=(
                settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
            ),
            jwks_url=settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            jwks_timeout=settings.jwt_jwks_timeout_seconds,
            jwks_lifespan=settings.jwt_jwks_cache_seconds,
        )


@lru_cache(maxsize=8)
def _verifier(key: _VerifierKey) -> _Verifier:
    return _Verifier(key)


class _Verifier:
    """Verifies tokens of one configuration, remembering recent verifications.

    The signature check dominated the cost of a request, so a verified token is
    reused; `exp` is still checked on every use, and a verification is forgotten
    after the key set's lifespan, so a key rotated out of the JWKS stops passing.
    """

    def __init__(self, key: _VerifierKey) -> None:
        self.key = key
        self.verified: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        self.jwks: jwt.PyJWKClient | None = None
        self.fetching = asyncio.Lock()
        self.jwks_down_until = float("-inf")
        if key.algorithm is JwtAlgorithm.RS256 and key.jwks_url:
            # The per-kid cache (`cache_keys`) never expires, so a revoked key
            # would pass forever: only the key set is cached, for `lifespan`.
            self.jwks = jwt.PyJWKClient(
                key.jwks_url,
                cache_keys=False,
                lifespan=key.jwks_lifespan,
                timeout=key.jwks_timeout,
            )

    async def verify(self, token: str) -> Caller:
        cached = self.verified.get(token)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        caller = self._decode(token, await self._signing_key(token))
        self.verified[token] = (caller, time.monotonic() + self.key.jwks_lifespan)
        self.verified.move_to_end(token)
        while len(self.verified) > _MAX_VERIFIED_TOKENS:
            self.verified.popitem(last=False)
        return caller

    async def _signing_key(self, token: str) -> Any:
        if self.key.algorithm is JwtAlgorithm.HS256:
            # Startup refuses a short secret; never verify with one regardless (an
            # empty key would let anyone sign).
            if len((self.key.secret or "").encode()) < MIN_SECRET_BYTES:
                raise Problem(500, "auth_misconfigured", "JWT_SECRET is too short.")
            return self.key.secret
        if self.jwks is None:
            raise Problem(500, "auth_misconfigured", "RS256 needs JWT_JWKS_URL.")
        # One lookup at a time: each may fetch, and a waiting coroutine holds no
        # thread, where a queue of threads behind PyJWKClient's lock would.
        async with self.fetching:
            if time.monotonic() < self.jwks_down_until:
                raise _idp_unavailable()
            try:
                # urllib blocks: fetch in a thread, so a slow IdP stalls no request
                # that does not need it.
                signing_key = await asyncio.wait_for(
                    asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token),
                    self.key.jwks_timeout + 1,
                )
            except (jwt.PyJWKClientConnectionError, TimeoutError) as err:
                # Answer at once for a moment rather than queue every new token
                # behind another timeout.
                self.jwks_down_until = time.monotonic() + JWKS_RETRY_SECONDS
                raise _idp_unavailable() from err
            except jwt.PyJWTError as err:  # an unknown `kid`, a malformed header
                raise _invalid(err) from None
        return signing_key.key

    def _decode(self, token: str, signing_key: Any) -> Caller:
        required = ["exp", "sub", "role"]
        if self.key.algorithm is JwtAlgorithm.RS256:
            required += ["iss", "aud"]
        try:
            claims = jwt.decode(
                token,
                signing_key,
                algorithms=[self.key.algorithm.value],
                audience=self.key.audience,
                issuer=self.key.issuer,
                options={"require": required},
            )
            role = Role(claims["role"])
            if role not in PRODUCT_ROLES:
                raise ValueError(f"role {role} is not a caller's role")
            subject = check_subject(str(claims["sub"]))
        except (jwt.PyJWTError, ValueError) as err:
            raise _invalid(err) from None
        return Caller(Actor(role, subject), float(claims["exp"]))


def _idp_unavailable() -> Problem:
    return Problem(
        503,
        "identity_provider_unavailable",
        "The identity provider's keys could not be fetched; retry.",
        headers={"Retry-After": str(JWKS_RETRY_SECONDS)},
    )


def _invalid(err: Exception) -> Problem:
    return Problem(
        401, "invalid_token", f"The token is not valid: {err}", headers=_CHALLENGE
    )
