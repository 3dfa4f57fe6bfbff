"""A real SMTP server for tests (aiosmtpd), keeping every message it receives."""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.py.support.net import free_port
from tests.py.support.processes import wait_for


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        return str(body.get_content()).replace("\r\n", "\n")  # SMTP sends CRLF line ends


@dataclass
class SmtpSink:
    """Accepts every message (optionally refusing the next few with 451, a server that is busy)."""

    messages: list[Received] = field(default_factory=list)
    busy: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self.busy > 0:
                self.busy -= 1
                return "451 4.3.0 Try again later"
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def start(self) -> SmtpSink:
        self._controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    @property
    def url(self) -> str:
        assert self._controller is not None
        return f"smtp://{self._controller.hostname}:{self._controller.port}"

    def to(self, recipient: str) -> list[Received]:
        with self._lock:
            return [message for message in self.messages if recipient in message.recipients]

    def wait_for(self, recipient: str, subject_part: str, timeout: float = 60) -> Received:
        found: list[Received] = []

        def arrived() -> bool:
            found[:] = [m for m in self.to(recipient) if subject_part in m.subject]
            return bool(found)

        wait_for(arrived, timeout=timeout, interval=0.2, message=f"a mail to {recipient} about {subject_part!r}")
        return found[-1]
