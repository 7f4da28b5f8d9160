"""The one settings object, read from the environment by entry points only.

Every field is declared once; its environment variable is the field name in upper case
(``web_port`` <- ``WEB_PORT``) unless the field names another (``env`` <- ``SPACEMUSIC_ENV``).
Secrets are ``SecretStr``: they print as ``**********`` in reprs, logs and tracebacks and
are unwrapped only where an adapter needs them. A required setting that is missing fails
fast with a message naming every missing variable, so a misconfigured process dies at
start-up instead of half-working.

``Settings(...)`` takes only what it is given (tests build one field by field);
``Settings.from_env()`` is how entry points read the environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

REPO_ROOT = Path(__file__).resolve().parents[1]

# The environment `from_env` reads for the duration of one construction (a mapping, so
# tests can pass theirs without touching os.environ).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("spacemusic_settings_environ", default=None)


class SettingsError(RuntimeError):
    """Configuration is missing or malformed; the message says which variable and why."""


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", env_ignore_empty=True, populate_by_name=True, case_sensitive=False
    )

    kafka_bootstrap_servers: str
    schema_registry_url: str
    database_url: SecretStr  # carries the database password
    env: str = Field("prod", validation_alias="SPACEMUSIC_ENV")
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
    # The web's own listener for /metrics and detailed /readyz (kept off the API port); 0 = off
    web_metrics_port: int = 0
    startup_retry_seconds: float = 300.0
    # The worker's progress watchdog (infra/progress.py): how often it measures its group's
    # committed offsets and lag, and how long a partition it owns may have lag without its
    # committed offset moving before /readyz fails, then /healthz (a restart: the stuck
    # messages are redelivered). 0 turns either check off.
    worker_lag_interval_seconds: float = Field(15.0, gt=0)
    worker_stall_ready_seconds: float = Field(120.0, ge=0)
    worker_stall_live_seconds: float = Field(600.0, ge=0)
    # How many recently decoded or encoded events a worker keeps so its agents decode each
    # message once (infra.avro.DecodedMemo); 0 turns the memo off.
    worker_decode_memo_entries: int = Field(16_384, ge=0)
    # Long-running processes (worker, web, rebuild) collect the young generation this often
    # (allocations); 0 keeps Python's default of 700. See infra/gc_tuning.py.
    gc_gen0_threshold: int = Field(50_000, ge=0)
    s3_endpoint_url: str | None = None
    s3_bucket: str = "spacemusic-documents"
    stripe_api_base: str = "https://api.stripe.com"
    stripe_api_key: SecretStr = SecretStr("")
    wise_api_base: str = "https://api.transferwise.com"
    wise_token: SecretStr = SecretStr("")
    wise_profile_id: str = ""
    # Provider webhooks (web/webhooks.py): Stripe's endpoint signing secret (whsec_...), Wise's
    # RSA public key (PEM; "\n" escapes allowed on one line), and how old a signed delivery may be.
    stripe_webhook_secret: SecretStr = SecretStr("")
    wise_webhook_public_key: str = ""
    webhook_tolerance_seconds: int = 300
    # Recipient details (infra/crypto.py): the keyring "<key id>:<base64 of 32 bytes>,..." whose
    # first entry seals new rows and every entry opens; the legacy single Fernet key only opens
    # rows sealed before the keyring, until `spacemusic recipients rotate-key` re-encrypts them.
    recipient_encryption_keys: SecretStr = SecretStr("")
    recipient_encryption_key: SecretStr = SecretStr("")
    payout_provider_timeout_seconds: float = 10.0
    # The outbox relay (web/relay.py): rows unsent this long after their commit are published
    # by the relay (younger ones are still being sent by their handler); how often it looks.
    outbox_relay_after_seconds: float = 5.0
    outbox_relay_poll_seconds: float = 1.0
    # Ambiguous provider answers (docs/providers.md): how long a Stripe 5xx may take to become
    # visible before a lookup that still finds nothing counts as "never executed"; how many
    # lookups the consumer makes itself before parking the payout for the resolver; how often
    # the resolver wakes, and its longest pause between checks of one parked payout.
    payout_settle_seconds: float = 900.0
    payout_inline_unknown_rounds: int = 2
    payout_resolver_poll_seconds: float = 1.0
    payout_resolver_max_backoff_seconds: float = 60.0
    payout_reconcile_interval_seconds: float = 0.0  # 0 = the worker does not reconcile on a schedule
    # The pipeline worker publishes offer.lapsed for offers past valid_until this often (0 = off).
    offer_lapse_interval_seconds: float = 60.0
    oidc_issuer: str = ""
    oidc_audience: str = "https://api.spacemusic.local"
    oidc_jwks_url: str = ""
    oidc_algorithms: Annotated[tuple[str, ...], NoDecode] = ("RS256",)
    # OAuth scopes grant nothing unless mapped here: "scope=permission[ permission],..."
    oidc_scope_permissions: str = ""
    # The roles claim (a dotted path, e.g. realm_access.roles for Keycloak) and the role that
    # must come with a creator id (a creator token without one is refused with 403).
    oidc_roles_claim: str = "https://spacemusic.app/roles"
    oidc_creator_role: str = "creator"
    # Admin sign-in (authorization code + PKCE) at OIDC_ISSUER; off unless a client id is set.
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_redirect_url: str = ""  # default: <this host>/auth/oidc/callback
    oidc_scopes: str = "openid profile"
    dev_idp_key_path: Path = REPO_ROOT / ".local" / "dev-idp" / "signing-key.pem"
    session_secret: SecretStr = SecretStr("")
    session_check_seconds: float = 5.0  # how often an open SSE stream re-checks its session
    flags_file: Path = REPO_ROOT / "infra" / "local" / "flags.json"
    launchdarkly_sdk_key: SecretStr = SecretStr("")
    backup_bucket: str = "spacemusic-backups"  # `spacemusic backup` / `restore` (S3)
    backup_retry_seconds: float = 120.0  # how long backup/restore wait out an S3 outage
    pg_bin_dir: str = ""  # where pg_dump/pg_restore live; empty: PATH, then /usr/lib/postgresql/*/bin

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        return (init_settings, _MappingEnvSource(settings_cls, environ))

    @field_validator("oidc_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(a.strip() for a in value.split(",") if a.strip())
        return value

    @field_validator("recipient_encryption_keys")
    @classmethod
    def _keyring(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().strip():
            parse_keyring(value.get_secret_value())  # fails fast; the message never holds a key
        return value

    @field_validator("wise_webhook_public_key")
    @classmethod
    def _wise_webhook_key(cls, value: str) -> str:
        if value.strip():
            from infra.webhooks import load_wise_public_key

            load_wise_public_key(value)  # a malformed key fails at start-up, not per webhook
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql+asyncpg://", "postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _schema_dir_exists(self) -> Settings:
        if not self.schema_dir.is_dir():
            raise ValueError(f"SCHEMA_DIR {self.schema_dir} is not a directory")
        return self

    def topic(self, name: str) -> str:
        """The physical topic for a logical one (tests isolate themselves with a namespace)."""
        return f"{self.topic_namespace}{name}"

    def consumer_group(self, agent: str) -> str:
        return f"{self.consumer_group_prefix}.{self.topic_namespace}{agent}"

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url.get_secret_value()
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        raise SettingsError("DATABASE_URL must be a postgresql:// URL")

    @property
    def asyncpg_dsn(self) -> str:
        return self.sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    @property
    def recipient_keyring(self) -> tuple[tuple[str, bytes], ...]:
        """(key id, 32-byte AES key) pairs, the current key first; empty when not configured."""
        text = self.recipient_encryption_keys.get_secret_value()
        return parse_keyring(text) if text.strip() else ()

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like the original."""
        return type(self)(**{**self.model_dump(), **changes})

    @classmethod
    def env_var(cls, field: str) -> str:
        """The environment variable a field is read from."""
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        token = _ENVIRON.set(os.environ if environ is None else environ)
        try:
            settings = cls()
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None
        finally:
            _ENVIRON.reset(token)
        refuse_dev_secrets(settings)
        return settings

    def safe_summary(self) -> dict[str, object]:
        """What may be logged at start-up: no secrets, no credentials in URLs."""
        return {
            "env": self.env,
            "kafka": self.kafka_bootstrap_servers,
            "registry": self.schema_registry_url,
            "database": self.asyncpg_dsn.split("@")[-1],
            "topic_namespace": self.topic_namespace,
            "stripe_key": str(self.stripe_api_key) if self.stripe_api_key else "",
            "wise_token": str(self.wise_token) if self.wise_token else "",
            "launchdarkly": "configured" if self.launchdarkly_sdk_key else "local flag file",
        }


KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
KEYRING_FORMAT = "comma-separated <key id>:<base64 of 32 random bytes> entries, the current key first"


def parse_keyring(text: str) -> tuple[tuple[str, bytes], ...]:
    """RECIPIENT_ENCRYPTION_KEYS -> ((key id, key), ...). A malformed entry raises ValueError
    naming the entry's position and key id (never its key material)."""
    entries: list[tuple[str, bytes]] = []
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not KEY_ID_PATTERN.fullmatch(key_id):
            raise ValueError(
                f"entry {position}: expected <key id>:<key> with a key id of 1-32 letters, digits, _ or - "
                f"({KEYRING_FORMAT})"
            )
        try:  # standard or urlsafe alphabet (what `openssl rand -base64 32` and Fernet keys use)
            key = base64.b64decode(encoded.strip().replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ValueError(
                f"entry {position} ({key_id}): the key is not base64 of exactly 32 bytes ({KEYRING_FORMAT})"
            )
        if any(key_id == known for known, _ in entries):
            raise ValueError(f"key id {key_id} appears more than once")
        entries.append((key_id, key))
    return tuple(entries)


# SHA-256 of the secrets committed in infra/local/dev.env and oidc.env (a test keeps these in step). They
# are public, so outside dev a process that finds one of them refuses to start.
_DEV_SECRET_SHA256: dict[str, frozenset[str]] = {
    "session_secret": frozenset({"901e185c625390845d6f87cf5e527ad62d389c1dc0a6e63806287936077d0d12"}),
    "recipient_encryption_key": frozenset({"86de64d470df3319423bd27a331a68e6330208b9416300a32f892fb32c4242d8"}),
    "stripe_webhook_secret": frozenset({"2784abb4132c910db4fcef4aabbf1c6777c5bd8af8db6e07b2bd059f3138e011"}),
    # infra/local/oidc/oidc.env (the local OIDC provider's client)
    "oidc_client_secret": frozenset({"695f3682999ad255e8c6ac273bc072327d02d9bd0f0b06784d585cbd640adf5a"}),
}
# SHA-256 of the raw 32-byte keys committed in dev.env (the RECIPIENT_ENCRYPTION_KEYS entry and
# the legacy Fernet key's bytes): outside dev a keyring holding one of them, under any key id,
# is refused too.
_DEV_RECIPIENT_KEY_SHA256: frozenset[str] = frozenset(
    {
        "61388583c0630f8f5d14d413377f59af763ad1579115001acb5aae010cf41e35",
        "d531cc24961a44c4b521bd71f7bdb0a6289eea657c5b415d6c12d80123010396",
    }
)
DEV_IDP_PATH = "/dev-idp/"


def refuse_dev_secrets(settings: Settings) -> None:
    """Outside dev, start-up refuses the committed dev session secret, the dev encryption keys
    (the legacy key and any keyring entry) and the dev IdP's keys (an issuer or JWKS URL under
    /dev-idp/); the message names each variable, never its value."""
    if settings.is_dev:
        return
    found: list[str] = []
    for field, digests in _DEV_SECRET_SHA256.items():
        value = getattr(settings, field).get_secret_value()
        if value and hashlib.sha256(value.encode()).hexdigest() in digests:
            found.append(f"{Settings.env_var(field)} is the committed dev value from infra/local/dev.env")
    for key_id, key in settings.recipient_keyring:
        if hashlib.sha256(key).hexdigest() in _DEV_RECIPIENT_KEY_SHA256:
            found.append(
                f"{Settings.env_var('recipient_encryption_keys')} entry {key_id} is a committed dev key "
                "from infra/local/dev.env"
            )
    for field in ("oidc_issuer", "oidc_jwks_url"):
        if DEV_IDP_PATH in getattr(settings, field):
            found.append(f"{Settings.env_var(field)} points at the dev IdP ({DEV_IDP_PATH})")
    if found:
        raise SettingsError(
            f"refusing to start with SPACEMUSIC_ENV={settings.env}: "
            + "; ".join(found)
            + " (use real secrets from the deployment's Secret, or SPACEMUSIC_ENV=dev locally)"
        )


def _explain(exc: ValidationError) -> str:
    missing: list[str] = []
    malformed: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = Settings.env_var(field) if field in Settings.model_fields else field.upper()
        if error["type"] == "missing":
            missing.append(name)
        else:
            # The message only: the input may be a secret.
            malformed.append(f"{name}: {error['msg']}" if name else str(error["msg"]))
    parts = []
    if missing:
        parts.append(
            "missing required setting(s): "
            + ", ".join(missing)
            + " (set them in the environment; `make run` loads infra/local/dev.env)"
        )
    if malformed:
        parts.append("invalid setting(s): " + "; ".join(malformed))
    return "; ".join(parts)
