from __future__ import annotations

import pytest

from quarry.settings import Settings, SettingsError


def test_dev_defaults_are_the_embedded_setup() -> None:
    settings = Settings.from_env({})
    assert settings.environment == "development"
    assert settings.database_url == "postgresql://quarry_gateway@127.0.0.1:5432/quarry"
    assert settings.tenant_database_url == "postgresql://quarry_authenticator@127.0.0.1:5432/quarry"
    assert settings.jwks_url == "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json"
    assert settings.jwt_issuer == "http://127.0.0.1:54321/auth/v1"
    assert settings.jwt_secret is None


@pytest.mark.parametrize("missing", ["SUPABASE_URL", "DATABASE_URL", "TENANT_DATABASE_URL"])
def test_production_has_no_dev_fallbacks(missing: str) -> None:
    env = {
        "QUARRY_ENV": "production",
        "SUPABASE_URL": "https://ref.supabase.co",
        "DATABASE_URL": "postgresql://quarry_gateway@db/postgres",
        "TENANT_DATABASE_URL": "postgresql://quarry_authenticator@db/postgres",
    }
    del env[missing]
    with pytest.raises(SettingsError, match=missing):
        Settings.from_env(env)


def test_the_gateway_never_reads_the_admin_url() -> None:
    settings = Settings.from_env({"ADMIN_DATABASE_URL": "postgresql://postgres:secret@db/postgres"})
    assert "postgres:secret" not in repr(settings)
    assert not hasattr(settings, "admin_database_url")


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(SettingsError, match="QUARRY_ENV"):
        Settings.from_env({"QUARRY_ENV": "prod"})


def test_the_extraction_budget_has_defaults_and_can_be_set() -> None:
    budget = Settings.from_env({}).extraction_budget
    assert (budget.memory_mib, budget.processes, budget.timeout_seconds, budget.max_text_chars) == (
        1024,
        2,
        60,
        8_000_000,
    )
    assert budget.child_mib == 512
    env = {
        "EXTRACT_MEMORY_MIB": "2048",
        "EXTRACT_PROCESSES": "4",
        "EXTRACT_TIMEOUT_SECONDS": "15",
        "EXTRACT_MAX_TEXT_CHARS": "1000",
    }
    budget = Settings.from_env(env).extraction_budget
    assert (budget.child_mib, budget.timeout_seconds, budget.max_text_chars) == (512, 15, 1000)


def test_a_budget_too_small_for_a_parse_process_is_refused() -> None:
    with pytest.raises(SettingsError, match="at least 320 MiB per parse process"):
        Settings.from_env({"EXTRACT_MEMORY_MIB": "1024", "EXTRACT_PROCESSES": "4"})


def test_without_a_trusted_proxy_header_the_socket_peer_is_the_client() -> None:
    settings = Settings.from_env({})
    assert settings.trusted_proxy_header is None and settings.trusted_proxy_hops == 1
    assert (settings.auth_failures_per_address, settings.auth_failures_per_key) == (20, 5)
    proxied = Settings.from_env({"TRUSTED_PROXY_HEADER": "X-Forwarded-For", "TRUSTED_PROXY_HOPS": "2"})
    assert (proxied.trusted_proxy_header, proxied.trusted_proxy_hops) == ("x-forwarded-for", 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [("TRUSTED_PROXY_HEADER", "X-Forwarded-For: 1.2.3.4"), ("TRUSTED_PROXY_HOPS", "0"), ("BCRYPT_QUEUE", "many")],
)
def test_bad_auth_limits_are_refused_at_start(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
