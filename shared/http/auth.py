"""JWT bearer authentication: tokens in, `Actor` out.

HS256 with a shared secret in the embedded stack; RS256 against a JWKS URL in
production. Claims: `sub`, `role`, `exp`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import jwt
from pydantic import SecretStr

from shared.domain.actors import Actor, Role
from shared.http.problems import Problem
from shared.settings import CommonSettings, JwtAlgorithm

ISSUER: Final = "servicetrail"
# Subjects become ids in events (`customer_id`, `actor`): the same shape as ids there.
_SUBJECT: Final = re.compile(r"[^\s\x00]{1,200}")
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="servicetrail"'}


def issue_token(
    settings: CommonSettings,
    *,
    role: Role,
    subject: str,
    lifetime: timedelta = timedelta(hours=12),
    now: datetime | None = None,
) -> str:
    """A signed HS256 token (the embedded stack's issuer; production uses its IdP)."""
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role.value,
        "iss": ISSUER,
        "iat": issued,
        "exp": issued + lifetime,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True)


def _signing_key(settings: CommonSettings, token: str) -> Any:
    if settings.jwt_algorithm is JwtAlgorithm.RS256:
        if not settings.jwt_jwks_url:
            raise Problem(500, "auth_misconfigured", "RS256 needs JWT_JWKS_URL.")
        return _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token).key
    return settings.jwt_secret.get_secret_value()


@lru_cache(maxsize=8192)
def _verified_claims(
    token: str, settings_key: tuple[str, str, str | None, str | None]
) -> tuple[Actor, float]:
    """Verify a token once; mobile apps reuse theirs for many requests.

    The signature check dominated the cost of a request here. Expiry is still
    checked on every use by the caller, against the cached `exp`.
    """
    algorithm, secret, jwks_url, audience = settings_key
    settings = CommonSettings(
        jwt_algorithm=JwtAlgorithm(algorithm),
        jwt_secret=SecretStr(secret),
        jwt_jwks_url=jwks_url,
        jwt_audience=audience,
    )
    claims = jwt.decode(
        token,
        _signing_key(settings, token),
        algorithms=[algorithm],
        audience=audience,
        options={"require": ["exp", "sub", "role"]},
    )
    subject = str(claims["sub"])
    if not _SUBJECT.fullmatch(subject):
        raise ValueError("sub must be 1-200 characters without spaces")
    return Actor(Role(claims["role"]), subject), float(claims["exp"])


def authenticate(settings: CommonSettings, authorization: str | None) -> Actor:
    """The actor of an `Authorization: Bearer` header; 401 problem otherwise."""
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
    try:
        actor, expires = _verified_claims(
            token,
            (
                settings.jwt_algorithm.value,
                settings.jwt_secret.get_secret_value(),
                settings.jwt_jwks_url,
                settings.jwt_audience,
            ),
        )
        if expires <= time.time():
            raise jwt.ExpiredSignatureError("Signature has expired")
        return actor
    except (jwt.PyJWTError, ValueError) as err:
        raise Problem(
            401, "invalid_token", f"The token is not valid: {err}", headers=_CHALLENGE
        ) from None


def require_role(actor: Actor, allowed: frozenset[Role]) -> None:
    """403 unless the actor's role is allowed (admins are always allowed)."""
    if actor.role is not Role.ADMIN and actor.role not in allowed:
        raise Problem(
            403,
            "forbidden",
            f"Role {actor.role} may not do this; allowed: {', '.join(sorted(allowed))}.",
        )
