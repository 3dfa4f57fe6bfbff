"""Mail through a real SMTP server (aiosmtpd), and the console mailer of development."""

from __future__ import annotations

import asyncio
import io

import pytest

from quarry.mail import ConsoleMailer, Mail, MailRefused, MailUnavailable, SmtpMailer, mailer_for
from quarry.settings import MailSettings, Settings, SettingsError
from tests.py.support.mail import SmtpSink
from tests.py.support.net import free_port

SENDER = "Quarry <no-reply@quarry.test>"


def test_a_message_reaches_the_server_as_plain_text(smtp: SmtpSink) -> None:
    mailer = mailer_for(MailSettings(url=smtp.url, sender=SENDER))
    assert isinstance(mailer, SmtpMailer)
    asyncio.run(mailer.send(Mail(to="ada@example.com", subject="Hello ünïcode", text="Line one\nLine two ✓\n")))
    received = smtp.wait_for("ada@example.com", "Hello")
    assert received.subject == "Hello ünïcode"
    assert received.text == "Line one\nLine two ✓\n"
    assert received.message["From"] == SENDER and received.message["Message-ID"]


def test_a_busy_server_is_unavailable_so_the_job_retries(smtp: SmtpSink) -> None:
    smtp.busy = 1
    mailer = SmtpMailer(smtp.url, SENDER)
    with pytest.raises(MailUnavailable) as refused:
        asyncio.run(mailer.send(Mail(to="bob@example.com", subject="Busy", text="x")))
    assert refused.value.retryable
    asyncio.run(mailer.send(Mail(to="bob@example.com", subject="Busy", text="x")))  # the retry gets through
    assert smtp.wait_for("bob@example.com", "Busy")


def test_no_server_is_unavailable_and_a_header_injection_is_refused() -> None:
    mailer = SmtpMailer(f"smtp://127.0.0.1:{free_port()}", SENDER)
    with pytest.raises(MailUnavailable):
        asyncio.run(mailer.send(Mail(to="x@example.com", subject="s", text="t")))
    with pytest.raises(MailRefused):
        asyncio.run(mailer.send(Mail(to="x@example.com\r\nBcc: y@example.com", subject="s", text="t")))


def test_without_smtp_url_mail_is_printed() -> None:
    stream = io.StringIO()
    asyncio.run(ConsoleMailer(SENDER, stream).send(Mail(to="dev@example.com", subject="Link", text="https://x/y")))
    printed = stream.getvalue()
    assert "To: dev@example.com" in printed and "https://x/y" in printed and "not sent" in printed
    assert isinstance(mailer_for(Settings.from_env({}).mail), ConsoleMailer)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMTP_URL": "http://mail.example.com"}, "SMTP_URL must look like"),
        ({"SMTP_URL": "smtp://mail.example.com:port"}, "port"),
        ({"SMTP_FROM": "nobody"}, "SMTP_FROM"),
        ({"EXPORT_LINK_EXPIRY_DAYS": "8"}, "at most 7"),
        ({"EXPORT_LINK_EXPIRY_DAYS": "0"}, "positive"),
    ],
)
def test_bad_mail_and_export_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_worker_needs_smtp_and_the_service_key_in_production() -> None:
    env = {
        "QUARRY_ENV": "production",
        "SUPABASE_URL": "https://ref.supabase.co",
        "DATABASE_URL": "postgresql://quarry_gateway@db/postgres",
        "TENANT_DATABASE_URL": "postgresql://quarry_authenticator@db/postgres",
        "WORKER_DATABASE_URL": "postgresql://quarry_worker@db/postgres",
        "DRIVE": "off",
        "QUARRY_DATA_DIR": "/srv/quarry",
    }
    with pytest.raises(SettingsError, match="SMTP_URL"):
        Settings.from_env(env).require_worker_settings()
    with pytest.raises(SettingsError, match="SUPABASE_SERVICE_ROLE_KEY"):
        Settings.from_env({**env, "SMTP_URL": "smtps://u:p@mail.example.com"}).require_worker_settings()
    settings = Settings.from_env(
        {**env, "SMTP_URL": "smtps://u:hunter2@mail.example.com", "SUPABASE_SERVICE_ROLE_KEY": "sb_k3y"}
    )
    settings.require_worker_settings()
    assert "hunter2" not in repr(settings) and "sb_k3y" not in repr(settings)
