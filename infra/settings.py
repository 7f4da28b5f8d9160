"""The one settings object, read from the environment by entry points only.

A required setting that is missing fails fast with a message naming every missing
variable, so a misconfigured process dies at start-up instead of half-working.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(RuntimeError):
    """Configuration is missing or malformed; the message says which variable and why."""


def _redact(value: str) -> str:
    return "***" if value else ""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str
    schema_registry_url: str
    database_url: str
    env: str = "prod"
    topic_namespace: str = ""
    topic_partitions: int = 3
    topic_replication_factor: int = 1
    consumer_group_prefix: str = "spacemusic"
    schema_dir: Path = REPO_ROOT / "schema"
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    sse_heartbeat_seconds: float = 15.0
    log_level: str = "INFO"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # the worker's Prometheus endpoint; 0 = off
    startup_retry_seconds: float = 300.0
    s3_endpoint_url: str | None = None
    s3_bucket: str = "spacemusic-documents"
    stripe_api_base: str = "https://api.stripe.com"
    stripe_api_key: str = field(default="", repr=False)
    wise_api_base: str = "https://api.transferwise.com"
    wise_token: str = field(default="", repr=False)
    wise_profile_id: str = ""
    recipient_encryption_key: str = field(default="", repr=False)
    payout_provider_timeout_seconds: float = 10.0
    oidc_issuer: str = ""
    oidc_audience: str = "https://api.spacemusic.local"
    oidc_jwks_url: str = ""
    oidc_algorithms: tuple[str, ...] = ("RS256",)
    dev_idp_key_path: Path = REPO_ROOT / ".local" / "dev-idp" / "signing-key.pem"
    session_secret: str = field(default="", repr=False)
    flags_file: Path = REPO_ROOT / "infra" / "local" / "flags.json"
    launchdarkly_sdk_key: str = field(default="", repr=False)

    def topic(self, name: str) -> str:
        """The physical topic for a logical one (tests isolate themselves with a namespace)."""
        return f"{self.topic_namespace}{name}"

    def consumer_group(self, agent: str) -> str:
        return f"{self.consumer_group_prefix}.{self.topic_namespace}{agent}"

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        raise SettingsError("DATABASE_URL must be a postgresql:// URL")

    @property
    def asyncpg_dsn(self) -> str:
        return self.sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        required = {
            "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
            "schema_registry_url": "SCHEMA_REGISTRY_URL",
            "database_url": "DATABASE_URL",
        }
        missing = [var for var in required.values() if not env.get(var)]
        if missing:
            raise SettingsError(
                "missing required setting(s): "
                + ", ".join(missing)
                + " (set them in the environment; `make run` loads infra/local/dev.env)"
            )
        values: dict[str, object] = {attr: env[var] for attr, var in required.items()}
        optional: dict[str, tuple[str, Callable[[str], object]]] = {
            "env": ("SPACEMUSIC_ENV", str),
            "topic_namespace": ("TOPIC_NAMESPACE", str),
            "topic_partitions": ("TOPIC_PARTITIONS", int),
            "topic_replication_factor": ("TOPIC_REPLICATION_FACTOR", int),
            "consumer_group_prefix": ("CONSUMER_GROUP_PREFIX", str),
            "schema_dir": ("SCHEMA_DIR", Path),
            "web_host": ("WEB_HOST", str),
            "web_port": ("WEB_PORT", int),
            "sse_heartbeat_seconds": ("SSE_HEARTBEAT_SECONDS", float),
            "log_level": ("LOG_LEVEL", str),
            "metrics_host": ("METRICS_HOST", str),
            "metrics_port": ("METRICS_PORT", int),
            "startup_retry_seconds": ("STARTUP_RETRY_SECONDS", float),
            "s3_endpoint_url": ("S3_ENDPOINT_URL", str),
            "s3_bucket": ("S3_BUCKET", str),
            "stripe_api_base": ("STRIPE_API_BASE", str),
            "stripe_api_key": ("STRIPE_API_KEY", str),
            "wise_api_base": ("WISE_API_BASE", str),
            "wise_token": ("WISE_TOKEN", str),
            "wise_profile_id": ("WISE_PROFILE_ID", str),
            "recipient_encryption_key": ("RECIPIENT_ENCRYPTION_KEY", str),
            "payout_provider_timeout_seconds": ("PAYOUT_PROVIDER_TIMEOUT_SECONDS", float),
            "oidc_issuer": ("OIDC_ISSUER", str),
            "oidc_audience": ("OIDC_AUDIENCE", str),
            "oidc_jwks_url": ("OIDC_JWKS_URL", str),
            "oidc_algorithms": ("OIDC_ALGORITHMS", lambda raw: tuple(a.strip() for a in raw.split(",") if a.strip())),
            "dev_idp_key_path": ("DEV_IDP_KEY_PATH", Path),
            "session_secret": ("SESSION_SECRET", str),
            "flags_file": ("FLAGS_FILE", Path),
            "launchdarkly_sdk_key": ("LAUNCHDARKLY_SDK_KEY", str),
        }
        for attr, (var, kind) in optional.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[attr] = kind(raw)
            except ValueError as exc:
                raise SettingsError(f"{var}={raw!r} is not a valid {getattr(kind, '__name__', 'value')}") from exc
        settings = cls(**values)  # type: ignore[arg-type]
        if not settings.schema_dir.is_dir():
            raise SettingsError(f"SCHEMA_DIR {settings.schema_dir} is not a directory")
        _ = settings.sqlalchemy_url  # validates the URL scheme early
        return settings

    def safe_summary(self) -> dict[str, object]:
        """What may be logged at start-up: no secrets, no credentials in URLs."""
        return {
            "env": self.env,
            "kafka": self.kafka_bootstrap_servers,
            "registry": self.schema_registry_url,
            "database": self.asyncpg_dsn.split("@")[-1],
            "topic_namespace": self.topic_namespace,
            "stripe_key": _redact(self.stripe_api_key),
            "wise_token": _redact(self.wise_token),
            "launchdarkly": "configured" if self.launchdarkly_sdk_key else "local flag file",
        }
