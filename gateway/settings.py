"""Gateway settings, read once from the environment.

Defaults are the embedded development set-up: local Postgres, the dev auth
server on :54321 (Supabase's local API port) and a dev signing key.
With QUARRY_ENV=production nothing falls back to a dev default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENVIRONMENTS = ("development", "test", "production")
DEV_SUPABASE_URL = "http://127.0.0.1:54321"
DEV_DATABASE = "quarry"


def dev_database_name(env: Mapping[str, str]) -> str:
    return env.get("QUARRY_DB_NAME", DEV_DATABASE)


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Settings:
    environment: str
    database_url: str
    supabase_url: str
    jwt_issuer: str
    jwks_url: str
    jwt_audience: str
    jwt_secret: str | None
    jwt_leeway_seconds: int
    jwks_cache_seconds: int
    jwks_min_refetch_seconds: float

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        environment = env.get("QUARRY_ENV", "development")
        if environment not in ENVIRONMENTS:
            raise SettingsError(f"QUARRY_ENV must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}")
        production = environment == "production"

        def required(name: str, dev_default: str) -> str:
            value = env.get(name)
            if value:
                return value
            if production:
                raise SettingsError(f"{name} must be set when QUARRY_ENV=production")
            return dev_default

        database = dev_database_name(env)
        supabase_url = required("SUPABASE_URL", DEV_SUPABASE_URL).rstrip("/")
        return cls(
            environment=environment,
            database_url=required("DATABASE_URL", f"postgresql://quarry_gateway@127.0.0.1:5432/{database}"),
            supabase_url=supabase_url,
            jwt_issuer=env.get("SUPABASE_JWT_ISSUER", f"{supabase_url}/auth/v1"),
            jwks_url=env.get("SUPABASE_JWKS_URL", f"{supabase_url}/auth/v1/.well-known/jwks.json"),
            jwt_audience=env.get("SUPABASE_JWT_AUDIENCE", "authenticated"),
            jwt_secret=env.get("SUPABASE_JWT_SECRET") or None,
            jwt_leeway_seconds=int(env.get("JWT_LEEWAY_SECONDS", "10")),
            jwks_cache_seconds=int(env.get("JWKS_CACHE_SECONDS", "600")),
            jwks_min_refetch_seconds=float(env.get("JWKS_MIN_REFETCH_SECONDS", "10")),
        )
