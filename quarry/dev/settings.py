"""Settings only the dev tooling reads: the gateway never sees the admin URL."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from quarry.paths import REPO_ROOT
from quarry.settings import Settings, dev_database_name


class DevModeRefused(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class DevSettings:
    gateway: Settings
    admin_database_url: str
    dev_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DevSettings:
        env = os.environ if env is None else env
        if env.get("QUARRY_ENV") == "production":
            raise DevModeRefused("dev signing is disabled when QUARRY_ENV=production")
        gateway = Settings.from_env(env)
        database = dev_database_name(env)
        return cls(
            gateway=gateway,
            admin_database_url=env.get("ADMIN_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/{database}"),
            dev_dir=Path(env.get("QUARRY_DEV_DIR", str(REPO_ROOT / ".dev"))),
        )
