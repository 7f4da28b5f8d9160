from __future__ import annotations

import pytest

from infra.settings import Settings, SettingsError

BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081",
    "DATABASE_URL": "postgresql://u:p@127.0.0.1/db",
}


def test_missing_required_settings_fail_fast_naming_each() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"DATABASE_URL": BASE["DATABASE_URL"]})
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(err.value) and "SCHEMA_REGISTRY_URL" in str(err.value)


def test_malformed_values_are_reported() -> None:
    with pytest.raises(SettingsError, match="WEB_PORT"):
        Settings.from_env({**BASE, "WEB_PORT": "eighty"})
    with pytest.raises(SettingsError, match="postgresql"):
        Settings.from_env({**BASE, "DATABASE_URL": "mysql://x"})


def test_defaults_and_derived_values() -> None:
    s = Settings.from_env({**BASE, "TOPIC_NAMESPACE": "t1.", "OIDC_ALGORITHMS": "RS256, ES256"})
    assert s.topic("offer.created") == "t1.offer.created"
    assert s.sqlalchemy_url.startswith("postgresql+asyncpg://")
    assert s.oidc_algorithms == ("RS256", "ES256")
    assert "p@" not in str(s.safe_summary())


def test_secrets_are_not_in_repr() -> None:
    s = Settings.from_env({**BASE, "WISE_TOKEN": "sekrit-token", "STRIPE_API_KEY": "sk_live_x"})
    assert "sekrit" not in repr(s) and "sk_live" not in repr(s)
    assert "sekrit" not in str(s.safe_summary())


def test_worker_watchdog_settings() -> None:
    s = Settings.from_env(BASE)
    assert (s.worker_lag_interval_seconds, s.worker_stall_ready_seconds, s.worker_stall_live_seconds) == (
        15.0,
        120.0,
        600.0,
    )
    s = Settings.from_env(
        {
            **BASE,
            "WORKER_LAG_INTERVAL_SECONDS": "0.5",
            "WORKER_STALL_READY_SECONDS": "5",
            "WORKER_STALL_LIVE_SECONDS": "0",
        }
    )
    assert (s.worker_lag_interval_seconds, s.worker_stall_ready_seconds, s.worker_stall_live_seconds) == (0.5, 5.0, 0.0)
    with pytest.raises(SettingsError, match="WORKER_LAG_INTERVAL_SECONDS"):
        Settings.from_env({**BASE, "WORKER_LAG_INTERVAL_SECONDS": "0"})  # 0 would measure in a busy loop
    with pytest.raises(SettingsError, match="WORKER_STALL_READY_SECONDS"):
        Settings.from_env({**BASE, "WORKER_STALL_READY_SECONDS": "-1"})
    with pytest.raises(SettingsError, match="WORKER_STALL_LIVE_SECONDS"):
        Settings.from_env({**BASE, "WORKER_STALL_LIVE_SECONDS": "ten minutes"})


def test_throughput_settings() -> None:
    s = Settings.from_env(BASE)
    assert (s.gc_gen0_threshold, s.worker_decode_memo_entries) == (50_000, 16_384)
    s = Settings.from_env({**BASE, "GC_GEN0_THRESHOLD": "0", "WORKER_DECODE_MEMO_ENTRIES": "0"})
    assert (s.gc_gen0_threshold, s.worker_decode_memo_entries) == (0, 0)  # Python's default; memo off
    with pytest.raises(SettingsError, match="GC_GEN0_THRESHOLD"):
        Settings.from_env({**BASE, "GC_GEN0_THRESHOLD": "-1"})
    with pytest.raises(SettingsError, match="WORKER_DECODE_MEMO_ENTRIES"):
        Settings.from_env({**BASE, "WORKER_DECODE_MEMO_ENTRIES": "many"})
