"""Outgoing mail: export links, export failures, deletion receipts.

`SMTP_URL` names the server: `smtp://[user:password@]host[:port]` (port 25,
plain), `smtp+starttls://…` (port 587, STARTTLS required) or `smtps://…`
(port 465, TLS from the start); `SMTP_FROM` the sender.  Without `SMTP_URL`
(development and tests) every message is printed to the console instead, so
`make dev` shows what would have been sent.

Sending is stdlib smtplib on a worker thread (it blocks); a server that
cannot be reached or refuses for now is `MailUnavailable` (503, retryable),
so the job that mails retries; a refused recipient is a plain failure.
Neither the message nor the credentials are logged.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol, TextIO
from urllib.parse import unquote, urlsplit

from quarry.errors import QuarryError, Unavailable
from quarry.settings import MailSettings

logger = logging.getLogger("quarry.mail")

TIMEOUT_SECONDS = 30
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class Mail:
    """One plain-text message to one person."""

    to: str
    subject: str
    text: str


class MailUnavailable(Unavailable):
    slug = "mail-unavailable"

    def __init__(self, internal: str) -> None:
        super().__init__("The mail server is unavailable; try again shortly.", internal=internal)


class MailRefused(QuarryError):
    """The server will not take this message (a bad recipient, a policy): retrying will not help."""

    status = 502
    slug = "mail-refused"


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


def message(mail: Mail, sender: str) -> EmailMessage:
    if any(char in mail.to or char in mail.subject for char in "\r\n"):
        raise MailRefused("A recipient or subject may not hold a line break.")
    built = EmailMessage()
    built["From"] = sender
    built["To"] = mail.to
    built["Subject"] = mail.subject
    built["Date"] = formatdate(localtime=False)
    domain = sender.rsplit("@", 1)[-1].strip(" >") or "quarry.localhost"
    built["Message-ID"] = make_msgid(domain=domain)
    built.set_content(mail.text)
    return built


class SmtpMailer:
    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        self._scheme = parts.scheme
        self._host = parts.hostname or "localhost"
        self._port = parts.port or DEFAULT_PORTS[parts.scheme]
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.sender = sender

    def __repr__(self) -> str:
        return f"SmtpMailer({self._scheme}://{self._host}:{self._port})"

    async def send(self, mail: Mail) -> None:
        built = message(mail, self.sender)
        await asyncio.to_thread(self._send, built)

    def _send(self, built: EmailMessage) -> None:
        context = ssl.create_default_context()
        try:
            server: smtplib.SMTP
            if self._scheme == "smtps":
                server = smtplib.SMTP_SSL(self._host, self._port, timeout=TIMEOUT_SECONDS, context=context)
            else:
                server = smtplib.SMTP(self._host, self._port, timeout=TIMEOUT_SECONDS)
            with server:
                if self._scheme == "smtp+starttls":
                    server.starttls(context=context)
                if self._user is not None:
                    server.login(self._user, self._password or "")
                server.send_message(built)
        except smtplib.SMTPRecipientsRefused as error:
            raise MailRefused("The mail server refused the recipient.") from error
        except smtplib.SMTPResponseException as error:
            if 400 <= error.smtp_code < 500:  # "try again later"
                raise MailUnavailable(f"the mail server answered {error.smtp_code}") from error
            raise MailRefused(f"The mail server refused the message ({error.smtp_code}).") from error
        except (OSError, smtplib.SMTPException) as error:
            raise MailUnavailable(f"cannot reach the mail server ({type(error).__name__})") from error
        logger.info("mail sent through %s", self)


class ConsoleMailer:
    """Development: the message, as it would be sent, on the console."""

    def __init__(self, sender: str, stream: TextIO | None = None) -> None:
        self.sender = sender
        self._stream = stream

    async def send(self, mail: Mail) -> None:
        stream = self._stream or sys.stdout
        rule = "-" * 72
        stream.write(f"\n{rule}\n(SMTP_URL is not set: this mail is printed, not sent)\n")
        stream.write(message(mail, self.sender).as_string())
        stream.write(f"\n{rule}\n")
        stream.flush()


def mailer_for(settings: MailSettings) -> Mailer:
    if settings.url is None:
        return ConsoleMailer(settings.sender)
    return SmtpMailer(settings.url, settings.sender)
