"""Gateway settings, read once from the environment.

Defaults are the embedded development set-up: local Postgres, the dev auth
server on :54321 (Supabase's local API port) and a dev signing key.
With QUARRY_ENV=production nothing falls back to a dev default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from quarry.parsing.budget import MIN_CHILD_MIB, ExtractionBudget
from quarry.paths import REPO_ROOT

ENVIRONMENTS = ("development", "test", "production")
BLOB_BACKENDS = ("local", "s3")
INDEX_BACKENDS = ("edge", "server")
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
    tenant_database_url: str
    supabase_url: str
    jwt_issuer: str
    jwks_url: str
    jwt_audience: str
    jwt_secret: str | None
    jwt_leeway_seconds: int
    jwks_cache_seconds: int
    jwks_min_refetch_seconds: float
    worker_database_url: str | None
    data_dir: Path
    blob_backend: str
    s3_bucket: str | None
    s3_endpoint_url: str | None
    index_backend: str
    qdrant_url: str | None
    qdrant_api_key: str | None
    upload_max_bytes: int
    embedding_model_dir: Path | None
    model_cache_dir: Path
    worker_concurrency: int
    outbox_max_backoff_seconds: int
    rate_limits: bool = True
    index_edge_process: bool = False
    extract_memory_mib: int = 1024
    extract_processes: int = 2
    extract_timeout_seconds: int = 60
    extract_max_text_chars: int = 8_000_000
    trusted_proxy_header: str | None = None
    trusted_proxy_hops: int = 1
    auth_failures_per_address: int = 20
    auth_failures_per_key: int = 5
    auth_failure_window_seconds: int = 60
    bcrypt_threads: int = 2
    bcrypt_queue: int = 16
    openapi_reads_per_minute: int = 30
    uploads_in_flight_per_tenant: int = 4
    billing: BillingSettings | None = None
    drive: DriveSettings | None = None
    exports: ExportSettings = field(default_factory=lambda: ExportSettings())
    mail: MailSettings = field(default_factory=lambda: MailSettings())
    # The worker deletes auth users with it (Supabase's service_role key); None outside production.
    supabase_service_role_key: str | None = field(default=None, repr=False)
    ops: OpsSettings = field(default_factory=lambda: OpsSettings())

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def extraction_budget(self) -> ExtractionBudget:
        return ExtractionBudget(
            memory_mib=self.extract_memory_mib,
            processes=self.extract_processes,
            timeout_seconds=self.extract_timeout_seconds,
            max_text_chars=self.extract_max_text_chars,
        )

    @property
    def relay_in_gateway(self) -> bool:
        """Qdrant Edge is in-process and single-owner: the gateway (which searches) owns it
        and applies the outbox.  With a Qdrant server the worker applies it."""
        return self.index_backend == "edge"

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
        blob_backend = choice(env, "BLOB_BACKEND", BLOB_BACKENDS)
        index_backend = choice(env, "INDEX_BACKEND", INDEX_BACKENDS)
        if blob_backend == "s3" and not env.get("S3_BUCKET"):
            raise SettingsError("S3_BUCKET must be set when BLOB_BACKEND=s3")
        if index_backend == "server" and not env.get("QDRANT_URL"):
            raise SettingsError("QDRANT_URL must be set when INDEX_BACKEND=server")
        model_dir = env.get("EMBEDDING_MODEL_DIR")
        extract_memory_mib = positive_int(env, "EXTRACT_MEMORY_MIB", 1024)
        extract_processes = positive_int(env, "EXTRACT_PROCESSES", 2)
        if extract_memory_mib // extract_processes < MIN_CHILD_MIB:
            raise SettingsError(
                f"EXTRACT_MEMORY_MIB must allow at least {MIN_CHILD_MIB} MiB per parse process "
                f"(EXTRACT_PROCESSES={extract_processes}), not {extract_memory_mib}"
            )
        return cls(
            environment=environment,
            database_url=required("DATABASE_URL", f"postgresql://quarry_gateway@127.0.0.1:5432/{database}"),
            tenant_database_url=required(
                "TENANT_DATABASE_URL", f"postgresql://quarry_authenticator@127.0.0.1:5432/{database}"
            ),
            supabase_url=supabase_url,
            jwt_issuer=env.get("SUPABASE_JWT_ISSUER", f"{supabase_url}/auth/v1"),
            jwks_url=env.get("SUPABASE_JWKS_URL", f"{supabase_url}/auth/v1/.well-known/jwks.json"),
            jwt_audience=env.get("SUPABASE_JWT_AUDIENCE", "authenticated"),
            jwt_secret=env.get("SUPABASE_JWT_SECRET") or None,
            jwt_leeway_seconds=int(env.get("JWT_LEEWAY_SECONDS", "10")),
            jwks_cache_seconds=int(env.get("JWKS_CACHE_SECONDS", "600")),
            jwks_min_refetch_seconds=float(env.get("JWKS_MIN_REFETCH_SECONDS", "10")),
            # Only the worker needs it (checked when it starts).
            worker_database_url=env.get("WORKER_DATABASE_URL")
            or (None if production else f"postgresql://quarry_worker@127.0.0.1:5432/{database}"),
            data_dir=Path(
                required("QUARRY_DATA_DIR", str(REPO_ROOT / ".data" / database))
                if blob_backend == "local" or index_backend == "edge"
                else env.get("QUARRY_DATA_DIR", str(REPO_ROOT / ".data" / database))
            ),
            blob_backend=blob_backend,
            s3_bucket=env.get("S3_BUCKET") or None,
            s3_endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            index_backend=index_backend,
            qdrant_url=env.get("QDRANT_URL") or None,
            qdrant_api_key=env.get("QDRANT_API_KEY") or None,
            upload_max_bytes=positive_int(env, "UPLOAD_MAX_BYTES", 64 * 1024 * 1024),
            embedding_model_dir=Path(model_dir) if model_dir else None,
            model_cache_dir=Path(
                env.get("QUARRY_MODEL_CACHE_DIR")
                or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quarry" / "models"
            ),
            worker_concurrency=positive_int(env, "WORKER_CONCURRENCY", 32),
            outbox_max_backoff_seconds=positive_int(env, "OUTBOX_MAX_BACKOFF_SECONDS", 60),
            rate_limits=choice(env, "RATE_LIMITS", ("on", "off")) == "on",
            index_edge_process=choice(env, "INDEX_EDGE_PROCESS", ("off", "on")) == "on",
            extract_memory_mib=extract_memory_mib,
            extract_processes=extract_processes,
            extract_timeout_seconds=positive_int(env, "EXTRACT_TIMEOUT_SECONDS", 60),
            extract_max_text_chars=positive_int(env, "EXTRACT_MAX_TEXT_CHARS", 8_000_000),
            trusted_proxy_header=trusted_proxy_header(env),
            trusted_proxy_hops=positive_int(env, "TRUSTED_PROXY_HOPS", 1),
            auth_failures_per_address=positive_int(env, "AUTH_FAILURES_PER_ADDRESS", 20),
            auth_failures_per_key=positive_int(env, "AUTH_FAILURES_PER_KEY", 5),
            auth_failure_window_seconds=positive_int(env, "AUTH_FAILURE_WINDOW_SECONDS", 60),
            bcrypt_threads=positive_int(env, "BCRYPT_THREADS", 2),
            bcrypt_queue=positive_int(env, "BCRYPT_QUEUE", 16),
            openapi_reads_per_minute=positive_int(env, "OPENAPI_READS_PER_MINUTE", 30),
            uploads_in_flight_per_tenant=positive_int(env, "UPLOADS_IN_FLIGHT_PER_TENANT", 4),
            billing=BillingSettings.from_env(env),
            drive=DriveSettings.from_env(env, production=production),
            exports=ExportSettings.from_env(env, blob_backend=blob_backend),
            mail=MailSettings.from_env(env),
            supabase_service_role_key=env.get("SUPABASE_SERVICE_ROLE_KEY", "").strip() or None,
            ops=OpsSettings.from_env(env, production=production),
        )

    def require_worker_settings(self) -> None:
        """What only the worker needs, refused at its start in production (the gateway never reads them)."""
        if not self.is_production:
            return
        if self.worker_database_url is None:
            raise SettingsError("WORKER_DATABASE_URL must be set when QUARRY_ENV=production")
        if self.mail.url is None:
            raise SettingsError(
                "SMTP_URL must be set when QUARRY_ENV=production (the worker mails export links and deletion receipts)"
            )
        if self.supabase_service_role_key is None:
            raise SettingsError(
                "SUPABASE_SERVICE_ROLE_KEY must be set when QUARRY_ENV=production (account deletion removes the auth"
                " user through Supabase's Admin API)"
            )


DEFAULT_WORKER_METRICS_PORT = 9108


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """Connection budget, metrics and logs (README "Operations").

    The database never sees more connections from a process than its budget:
    the gateway `gateway_pool_size + gateway_service_pool_size + 1` (its API-key
    listener) `+ 1` (the outbox listener, with the embedded index); the worker
    `worker_pool_size + worker_service_pool_size + worker_queue_pool_size + 1`
    (procrastinate's listener) `+ 1` (the outbox listener, with a Qdrant server).
    A request that waits `db_pool_timeout_seconds` for a connection is a 503
    with Retry-After.
    """

    gateway_pool_size: int = 10
    gateway_service_pool_size: int = 4
    worker_pool_size: int | None = None  # None: min(WORKER_CONCURRENCY + 2, 16)
    worker_service_pool_size: int = 4
    worker_queue_pool_size: int = 4
    db_pool_timeout_seconds: float = 5.0
    metrics_token: str | None = None
    metrics_reads_per_minute: int = 30
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = DEFAULT_WORKER_METRICS_PORT  # 0: no metrics server
    metrics_sample_seconds: float = 5.0
    log_format: str = "text"

    def worker_pool(self, concurrency: int) -> int:
        return self.worker_pool_size or min(concurrency + 2, 16)

    def gateway_budget(self, *, relay_in_gateway: bool) -> int:
        """The most connections one gateway process opens."""
        return self.gateway_pool_size + self.gateway_service_pool_size + 1 + int(relay_in_gateway)

    def worker_budget(self, concurrency: int, *, relay_in_gateway: bool) -> int:
        """The most connections one worker process opens."""
        return (
            self.worker_pool(concurrency)
            + self.worker_service_pool_size
            + self.worker_queue_pool_size
            + 1
            + int(not relay_in_gateway)
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, production: bool) -> OpsSettings:
        token = env.get("METRICS_TOKEN", "").strip() or None
        if token is not None and len(token) < 16:
            raise SettingsError("METRICS_TOKEN must be at least 16 characters (a random secret)")
        timeout_ms = positive_int(env, "DB_POOL_TIMEOUT_MS", 5000)
        port_text = env.get("WORKER_METRICS_PORT", "").strip()
        try:
            port = int(port_text) if port_text else DEFAULT_WORKER_METRICS_PORT
        except ValueError:
            raise SettingsError(f"WORKER_METRICS_PORT must be a port number (0: off), not {port_text!r}") from None
        if not 0 <= port <= 65535:
            raise SettingsError(f"WORKER_METRICS_PORT must be a port number (0: off), not {port}")
        return cls(
            gateway_pool_size=positive_int(env, "GATEWAY_DB_POOL_SIZE", 10),
            gateway_service_pool_size=positive_int(env, "GATEWAY_SERVICE_POOL_SIZE", 4),
            worker_pool_size=positive_int(env, "WORKER_DB_POOL_SIZE", 1) if env.get("WORKER_DB_POOL_SIZE") else None,
            worker_service_pool_size=positive_int(env, "WORKER_SERVICE_POOL_SIZE", 4),
            worker_queue_pool_size=positive_int(env, "WORKER_QUEUE_POOL_SIZE", 4),
            db_pool_timeout_seconds=timeout_ms / 1000,
            metrics_token=token,
            metrics_reads_per_minute=positive_int(env, "METRICS_READS_PER_MINUTE", 30),
            worker_metrics_host=env.get("WORKER_METRICS_HOST", "").strip() or "127.0.0.1",
            worker_metrics_port=port,
            metrics_sample_seconds=float(positive_int(env, "METRICS_SAMPLE_SECONDS", 5)),
            log_format=choice(env, "LOG_FORMAT", ("json", "text") if production else ("text", "json")),
        )


DEFAULT_PUBLIC_API_URL = "http://127.0.0.1:8000"
DEFAULT_MAIL_SENDER = "Quarry <no-reply@quarry.localhost>"
# A SigV4 presigned URL lasts at most 7 days, so an export's link cannot last longer.
MAX_EXPORT_LINK_DAYS = 7


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """Where export archives go and how long their links last.

    `s3_bucket` None: the local blob directory, served by the gateway to the
    archive's owner; else that bucket (S3_ENDPOINT_URL applies), with presigned links.
    """

    link_expiry_days: int = MAX_EXPORT_LINK_DAYS
    s3_bucket: str | None = None
    public_api_url: str = DEFAULT_PUBLIC_API_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, blob_backend: str) -> ExportSettings:
        days = positive_int(env, "EXPORT_LINK_EXPIRY_DAYS", MAX_EXPORT_LINK_DAYS)
        if days > MAX_EXPORT_LINK_DAYS:
            raise SettingsError(
                f"EXPORT_LINK_EXPIRY_DAYS must be at most {MAX_EXPORT_LINK_DAYS}, not {days}: an S3 presigned link"
                " (SigV4) cannot last longer than 7 days"
            )
        bucket = env.get("EXPORT_S3_BUCKET", "").strip() or None
        if bucket is None and blob_backend == "s3":
            bucket = env.get("S3_BUCKET") or None
        public = env.get("PUBLIC_API_URL", "").strip().rstrip("/") or DEFAULT_PUBLIC_API_URL
        if origin_of(public) is None:
            raise SettingsError(f"PUBLIC_API_URL must be an http(s) URL, not {public!r}")
        return cls(link_expiry_days=days, s3_bucket=bucket, public_api_url=public)


SMTP_SCHEMES = ("smtp", "smtps", "smtp+starttls")


@dataclass(frozen=True, slots=True)
class MailSettings:
    """Outgoing mail: `url` None prints every message to the console (development and tests)."""

    url: str | None = field(default=None, repr=False)  # may carry a password
    sender: str = DEFAULT_MAIL_SENDER

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MailSettings:
        url = env.get("SMTP_URL", "").strip() or None
        if url is not None:
            parts = urlsplit(url)
            try:
                parts.port  # noqa: B018 (parsing it is the check)
            except ValueError:
                raise SettingsError("SMTP_URL has a port that is not a number") from None
            if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
                raise SettingsError(
                    "SMTP_URL must look like smtp://[user:password@]host[:port] (or smtps://, smtp+starttls://)"
                )
        sender = env.get("SMTP_FROM", "").strip() or DEFAULT_MAIL_SENDER
        if "\n" in sender or "\r" in sender or "@" not in sender:
            raise SettingsError(f"SMTP_FROM must be one address (Name <user@host> or user@host), not {sender!r}")
        return cls(url=url, sender=sender)


DRIVE_REQUIRED = (
    "GOOGLE_OAUTH_CLIENT_ID",
    "GOOGLE_OAUTH_CLIENT_SECRET",
    "GOOGLE_OAUTH_REDIRECT_URI",
    "DRIVE_TOKEN_KEYS",
    "DRIVE_APP_URL",
)


@dataclass(frozen=True, slots=True)
class DriveSettings:
    """Google Drive: the OAuth client, the token keys, where Google is, the sync's limits.

    The Google URLs default to Google's own; tests point them at a local fake.
    `token_keys` None (development only) means the key generated into `.dev/`.
    """

    client_id: str
    client_secret: str
    redirect_uri: str
    app_url: str
    token_keys: str | None
    auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    token_uri: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
    revoke_uri: str = "https://oauth2.googleapis.com/revoke"
    api_endpoint: str = "https://www.googleapis.com/drive/v3/"
    max_file_bytes: int = 64 * 1024 * 1024
    page_size: int = 100
    concurrency: int = 4
    max_retries: int = 6
    max_backoff_seconds: float = 32.0
    backoff_base_seconds: float = 1.0
    sync_interval_minutes: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, production: bool) -> DriveSettings | None:
        """None when Drive is turned off (DRIVE=off); in production every DRIVE_REQUIRED must be set."""
        if choice(env, "DRIVE", ("on", "off")) == "off":
            return None
        missing = [name for name in DRIVE_REQUIRED if not env.get(name)]
        if production and missing:
            raise SettingsError(
                f"Google Drive needs {', '.join(missing)} when QUARRY_ENV=production (or set DRIVE=off)"
            )
        defaults = cls("quarry-dev-client", "quarry-dev-secret", "", "", None)
        return cls(
            client_id=env.get("GOOGLE_OAUTH_CLIENT_ID") or defaults.client_id,
            client_secret=env.get("GOOGLE_OAUTH_CLIENT_SECRET") or defaults.client_secret,
            redirect_uri=env.get("GOOGLE_OAUTH_REDIRECT_URI") or "http://127.0.0.1:8000/api/drive/callback",
            app_url=env.get("DRIVE_APP_URL") or "http://127.0.0.1:8000/",
            token_keys=env.get("DRIVE_TOKEN_KEYS") or None,
            auth_uri=env.get("GOOGLE_OAUTH_AUTH_URI") or defaults.auth_uri,
            token_uri=env.get("GOOGLE_OAUTH_TOKEN_URI") or defaults.token_uri,
            revoke_uri=env.get("GOOGLE_OAUTH_REVOKE_URI") or defaults.revoke_uri,
            api_endpoint=env.get("GOOGLE_DRIVE_API_ENDPOINT") or defaults.api_endpoint,
            max_file_bytes=positive_int(env, "DRIVE_MAX_FILE_BYTES", defaults.max_file_bytes),
            page_size=positive_int(env, "DRIVE_PAGE_SIZE", defaults.page_size),
            concurrency=positive_int(env, "DRIVE_SYNC_CONCURRENCY", defaults.concurrency),
            max_retries=positive_int(env, "DRIVE_MAX_RETRIES", defaults.max_retries),
            max_backoff_seconds=float(positive_int(env, "DRIVE_MAX_BACKOFF_SECONDS", 32)),
            backoff_base_seconds=positive_int(env, "DRIVE_BACKOFF_BASE_MS", 1000) / 1000,
            sync_interval_minutes=positive_int(env, "DRIVE_SYNC_INTERVAL_MINUTES", defaults.sync_interval_minutes),
        )


@dataclass(frozen=True, slots=True)
class BillingSettings:
    """Stripe: the secret key, the two prices, where Checkout and the Portal send the customer back.

    Billing is off (checkout and portal answer 503) until STRIPE_SECRET_KEY is
    set.  STRIPE_API_BASE points the client at another Stripe API (the local
    one of `make dev` and the tests); production leaves it unset.
    """

    secret_key: str
    api_base: str | None
    price_pro: str
    price_enterprise: str
    success_url: str
    cancel_url: str
    return_url: str
    redirect_origins: frozenset[str]

    @property
    def prices(self) -> dict[str, str]:
        """Price id → plan, as internal.set_stripe_prices takes it."""
        return {self.price_pro: "pro", self.price_enterprise: "enterprise"}

    def price_of(self, plan: str) -> str:
        return {"pro": self.price_pro, "enterprise": self.price_enterprise}[plan]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BillingSettings | None:
        secret_key = env.get("STRIPE_SECRET_KEY", "").strip()
        if not secret_key:
            return None
        if not secret_key.startswith(("sk_", "rk_")):
            raise SettingsError("STRIPE_SECRET_KEY must be a Stripe secret (sk_…) or restricted (rk_…) key")
        prices: dict[str, str] = {}
        for name in ("STRIPE_PRICE_PRO", "STRIPE_PRICE_ENTERPRISE"):
            price = env.get(name, "").strip()
            if not price.startswith("price_"):
                raise SettingsError(f"{name} must be a Stripe price id (price_…) when STRIPE_SECRET_KEY is set")
            prices[name] = price
        urls: dict[str, str] = {}
        for name in ("BILLING_SUCCESS_URL", "BILLING_CANCEL_URL", "BILLING_RETURN_URL"):
            url = env.get(name, "").strip()
            if origin_of(url) is None:
                raise SettingsError(f"{name} must be an http(s) URL when STRIPE_SECRET_KEY is set, not {url!r}")
            urls[name] = url
        origins = {origin_of(url) for url in urls.values()}
        for item in env.get("BILLING_REDIRECT_ORIGINS", "").split(","):
            if item.strip():
                origin = origin_of(item.strip())
                if origin is None or origin != item.strip().rstrip("/"):
                    raise SettingsError(f"BILLING_REDIRECT_ORIGINS takes origins (https://host[:port]), not {item!r}")
                origins.add(origin)
        api_base = env.get("STRIPE_API_BASE", "").strip().rstrip("/") or None
        if api_base is not None and origin_of(api_base) is None:
            raise SettingsError(f"STRIPE_API_BASE must be an http(s) URL, not {api_base!r}")
        return cls(
            secret_key=secret_key,
            api_base=api_base,
            price_pro=prices["STRIPE_PRICE_PRO"],
            price_enterprise=prices["STRIPE_PRICE_ENTERPRISE"],
            success_url=urls["BILLING_SUCCESS_URL"],
            cancel_url=urls["BILLING_CANCEL_URL"],
            return_url=urls["BILLING_RETURN_URL"],
            redirect_origins=frozenset(origin for origin in origins if origin is not None),
        )


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def trusted_proxy_header(env: Mapping[str, str]) -> str | None:
    """The header whose entries the proxies in front append the peer they saw to (None: no proxy)."""
    name = env.get("TRUSTED_PROXY_HEADER", "").strip()
    if not name:
        return None
    if not all(char.isalnum() or char == "-" for char in name):
        raise SettingsError(f"TRUSTED_PROXY_HEADER must be a header name such as X-Forwarded-For, not {name!r}")
    return name.lower()


def choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, allowed[0])
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, not {value}")
    return value
