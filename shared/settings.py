"""Settings common to every service, read from the environment (pydantic-settings).

Each service extends `CommonSettings` with its own fields in `services/<name>/settings.py`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Final, Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# RFC 7518 3.2: an HS256 key at least as long as the hash output (256 bits).
MIN_SECRET_BYTES: Final = 32


class InvalidSettings(ValueError):
    """A configuration the services refuse to start with; the message says why."""


class JwtAlgorithm(StrEnum):
    HS256 = "HS256"
    RS256 = "RS256"


class CommonSettings(BaseSettings):
    """Connection and security settings shared by intake, dispatch, ledger and metrics."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/servicetrail",
        description="PostgreSQL URL (postgresql:// or postgresql+asyncpg://).",
    )
    database_pool_size: int = 10
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal[
        "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"
    ] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    # Prepended to every topic name: lets several deployments (or test runs) share
    # one Kafka cluster without seeing each other's records.
    kafka_topic_prefix: str = ""
    # A Tansu broker answers in ~20 ms when told to; aiokafka's 500 ms default wait
    # became the end-to-end latency floor when measured here.
    kafka_fetch_max_wait_ms: int = 20
    # Kafka's defaults; the embedded stack and tests lower them because Tansu holds a
    # new group's first join for about half the session timeout.
    kafka_session_timeout_ms: int = 10000
    kafka_heartbeat_interval_ms: int = 3000

    # Tokens and callers. No default secret: one readable in the source would sign
    # anyone's token. `check_token_settings` (run when an app is built) refuses to
    # start without what the algorithm needs.
    jwt_algorithm: JwtAlgorithm = JwtAlgorithm.HS256
    jwt_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None
    # Required with RS256: a token from the same IdP for another API must not pass.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long a fetched key set is trusted: a removed (rotated out) key stops
    # verifying tokens within this time, and so does a cached verification.
    jwt_jwks_cache_seconds: float = Field(default=300.0, gt=0)

    def check_token_settings(self) -> None:
        """Raise `InvalidSettings` unless tokens can be verified safely."""
        match self.jwt_algorithm:
            case JwtAlgorithm.HS256:
                self.hs256_secret()
            case JwtAlgorithm.RS256:
                missing = [
                    name
                    for name, value in (
                        ("JWT_JWKS_URL", self.jwt_jwks_url),
                        ("JWT_ISSUER", self.jwt_issuer),
                        ("JWT_AUDIENCE", self.jwt_audience),
                    )
                    if not value
                ]
                if missing:
                    raise InvalidSettings(
                        f"JWT_ALGORITHM=RS256 needs {', '.join(missing)}."
                    )

    def hs256_secret(self) -> str:
        """The HS256 secret; raises `InvalidSettings` if missing or too short."""
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise InvalidSettings(
                f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes with "
                "JWT_ALGORITHM=HS256 (e.g. `openssl rand -base64 48`)."
            )
        return secret

    # FastAPI and Starlette buffer any request body; we refuse larger ones first.
    max_body_bytes: int = 64 * 1024
    # An offline batch of up to 500 events with their ids needs more than 64 KiB.
    max_batch_body_bytes: int = 1024 * 1024
    # Requests per caller (the token's role and subject; the client address without a
    # valid token), counted in each replica's memory: limits' notation, several joined
    # by ";" (e.g. "20/second;600/minute"); empty turns limiting off. A person's app
    # makes about one request a second and the ingest benchmark about 30 per token, so
    # 100 a second on average over a minute stops only a runaway client.
    rate_limit: str = "6000/minute"
    # --- What a caller can write (intake and dispatch; see shared.domain.rules) ---
    # Durations are ISO 8601 ("PT72H", "P30D") or "[D days, ]HH:MM:SS".
    # MAX_EVENT_AGE: how far behind the server's clock an event `time` may be, the
    # offline-sync grace; older is a 422 (event_time_too_old).
    max_event_age: timedelta = Field(default=timedelta(hours=72), ge=timedelta(0))
    # MAX_EVENTS_PER_ORDER: the most events one order holds; the next is a 409
    # (order_event_limit_reached).
    max_events_per_order: int = Field(default=1000, ge=1)
    # REFUSAL_RETENTION: how long a refused event id keeps answering with its
    # refusal; older refusals are forgotten (and deleted hourly).
    refusal_retention: timedelta = Field(default=timedelta(days=30), ge=timedelta(0))
    # WARRANTY_WINDOW: how long after the first final completion (as recorded by the
    # server) the customer may reopen the order (events.md: 30 days, configurable).
    warranty_window: timedelta = Field(default=timedelta(days=30), ge=timedelta(0))

    # CORS_ALLOW_ORIGINS: origins whose pages may call this service from a browser,
    # comma-separated (e.g. the dashboard's "http://127.0.0.1:8004"); empty: none,
    # no CORS headers at all. Exact origins only: a wildcard would let any page that
    # holds a token (a phished one) read the API from the victim's browser.
    cors_allow_origins: str = ""

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    @field_validator("rate_limit")
    @classmethod
    def _parseable_rate_limit(cls, value: str) -> str:
        # A typo must stop the service at start, not disable limiting silently.
        if value.strip():
            parse_many(value)
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _exact_origins(cls, value: str) -> str:
        for origin in _split_origins(value):
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"CORS_ALLOW_ORIGINS: {origin!r} is not an origin such as "
                    "https://dashboard.example.com or http://127.0.0.1:8004"
                )
        return value

    def cors_origins(self) -> list[str]:
        """The allowed origins, each as given (empty: CORS off)."""
        return _split_origins(self.cors_allow_origins)

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with the asyncpg driver that SQLAlchemy needs."""
        scheme, _, rest = self.database_url.partition("://")
        return (
            f"postgresql+asyncpg://{rest}"
            if scheme != "postgresql+asyncpg"
            else (self.database_url)
        )


# scheme://host[:port], nothing after: what a browser sends in `Origin`.
_ORIGIN: Final = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9a-fA-F:]+\](:[0-9]{1,5})?"
)


def _split_origins(value: str) -> list[str]:
    return [origin.strip() for origin in value.split(",") if origin.strip()]


class OutboxSettings(BaseSettings):
    """Tuning of the outbox relay that runs inside the services that write events."""

    model_config = SettingsConfigDict(env_prefix="OUTBOX_", extra="ignore")

    batch_size: int = 2000
    # Idle poll interval: low enough for sub-100 ms end-to-end lag, cheap because it
    # only reads a partial index of unpublished rows.
    poll_interval: timedelta = timedelta(milliseconds=20)
