"""A local Stripe for tests and `make dev`: the parts of the API Quarry uses, over plain HTTP.

The official clients talk to it unchanged through their documented
overrides: stripe-python's `base_addresses={"api": url}` (the gateway, the
worker), stripe-node's `host`/`port`/`protocol` with its fetch HTTP client
(the Edge Function).  It keeps customers (with Stripe's idempotency keys:
the same key answers the same customer), Checkout Sessions, Billing Portal
sessions, prices and subscriptions, and acts out what Stripe would do next
— a checkout completed, a plan changed in the portal, a payment failing, a
cancellation — by changing its state and sending the events, signed with the
real scheme (`Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "t.payload")`), to
the webhook URL it is given.  The events can also be returned unsent, to be
delivered shuffled, duplicated or concurrently.

`python -m tests.py.support.fake_stripe --port 12111 --webhook-url … --webhook-secret …`
serves it on its own (dev mode, the benchmark); `/_fake/…` routes act out the
same steps over HTTP.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

API_VERSION = "2026-10-28.clover"
DEFAULT_PRICES = {"price_pro_test": "Pro", "price_enterprise_test": "Enterprise"}
PERIOD_SECONDS = 30 * 24 * 3600
_KEY_PART = re.compile(r"([^\[\]]+)|\[([^\]]*)\]")


class StripeError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": kind, "message": message, **({"param": param} if param else {})}}


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[tenant_id]=…`, `line_items[0][price]=…`) as nested values."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = [named or index for named, index in _KEY_PART.findall(key)]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    decoded: dict[str, Any] = _lists(root)
    return decoded


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {key: _lists(item) for key, item in value.items()}
        if converted and all(key.isdigit() for key in converted):
            return [converted[key] for key in sorted(converted, key=int)]
        return converted
    return value


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for a payload."""
    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


@dataclass
class Event:
    id: str
    type: str
    data_object: dict[str, Any]
    created: int

    def payload(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "object": "event",
                "api_version": API_VERSION,
                "created": self.created,
                "livemode": False,
                "pending_webhooks": 1,
                "type": self.type,
                "data": {"object": self.data_object},
            }
        ).encode()


@dataclass
class FakeStripe:
    """Stripe's state and behaviour; `serve()` puts it behind HTTP."""

    api_key: str = "sk_test_quarry_fake"
    prices: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    webhook_url: str | None = None
    webhook_secret: str = "whsec_quarry_fake"
    public_url: str = "http://127.0.0.1"
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    portal_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    deleted_customers: set[str] = field(default_factory=set)
    fail_requests: int = 0  # the next N API calls answer 500 (Stripe having a bad minute)
    _idempotent: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _httpd: ThreadingHTTPServer | None = None

    # --- the API -----------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, Any], form: dict[str, Any], headers: Any) -> Any:
        with self._lock:
            self.requests.append((method, path))
            if headers.get("Authorization") != f"Bearer {self.api_key}":
                raise StripeError(401, "Invalid API Key provided.", kind="authentication_error")
            if self.fail_requests > 0:
                self.fail_requests -= 1
                raise StripeError(500, "An unexpected error occurred.", kind="api_error")
            key = headers.get("Idempotency-Key")
            if method == "POST" and key:
                fingerprint = json.dumps([path, form], sort_keys=True)
                if key in self._idempotent:
                    seen, response = self._idempotent[key]
                    if seen != fingerprint:
                        raise StripeError(
                            400,
                            "Keys for idempotent requests can only be used with the same parameters.",
                            kind="idempotency_error",
                        )
                    return response
                response = self._route(method, path, query, form)
                self._idempotent[key] = (fingerprint, response)
                return response
            return self._route(method, path, query, form)

    def _route(self, method: str, path: str, query: dict[str, Any], form: dict[str, Any]) -> Any:
        parts = path.strip("/").split("/")
        match method, parts:
            case "POST", ["v1", "customers"]:
                return self._create_customer(form)
            case "GET", ["v1", "customers", customer_id]:
                return self._get(self.customers, customer_id, "customer")
            case "POST", ["v1", "checkout", "sessions"]:
                return self._create_session(form)
            case "GET", ["v1", "checkout", "sessions", session_id]:
                return self._get(self.sessions, session_id, "checkout session")
            case "POST", ["v1", "billing_portal", "sessions"]:
                return self._create_portal_session(form)
            case "GET", ["v1", "subscriptions"]:
                return self._list_subscriptions(query)
            case "GET", ["v1", "subscriptions", subscription_id]:
                return self._get(self.subscriptions, subscription_id, "subscription")
            case "DELETE", ["v1", "subscriptions", subscription_id]:
                return self._cancel_now(subscription_id)
            case "DELETE", ["v1", "customers", customer_id]:
                return self._delete_customer(customer_id)
            case "GET", ["v1", "prices", price_id]:
                if price_id not in self.prices:
                    raise StripeError(404, f"No such price: '{price_id}'", param="id")
                return {"id": price_id, "object": "price", "active": True, "nickname": self.prices[price_id]}
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    def _get(self, table: dict[str, dict[str, Any]], object_id: str, kind: str) -> dict[str, Any]:
        if object_id not in table:
            raise StripeError(404, f"No such {kind}: '{object_id}'", param="id")
        return table[object_id]

    def _create_customer(self, form: dict[str, Any]) -> dict[str, Any]:
        customer = {
            "id": _id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "email": form.get("email"),
            "metadata": form.get("metadata", {}),
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return customer

    def _cancel_now(self, subscription_id: str) -> dict[str, Any]:
        """Cancel at once (the API's DELETE); the event is recorded, not delivered (the caller holds the lock)."""
        subscription = self._get(self.subscriptions, subscription_id, "subscription")
        if subscription["status"] != "canceled":
            subscription.update(status="canceled", canceled_at=int(time.time()))
            self._event("customer.subscription.deleted", subscription)
        return subscription

    def _delete_customer(self, customer_id: str) -> dict[str, Any]:
        """Delete a customer: Stripe cancels its live subscriptions with it."""
        self._get(self.customers, customer_id, "customer")
        for subscription in list(self.subscriptions.values()):
            if subscription["customer"] == customer_id and subscription["status"] != "canceled":
                self._cancel_now(subscription["id"])
        del self.customers[customer_id]
        self.deleted_customers.add(customer_id)
        self._event("customer.deleted", {"id": customer_id, "object": "customer"})
        return {"id": customer_id, "object": "customer", "deleted": True}

    def _create_session(self, form: dict[str, Any]) -> dict[str, Any]:
        if form.get("mode") != "subscription":
            raise StripeError(400, "mode must be subscription here", param="mode")
        customer = form.get("customer")
        if customer not in self.customers:
            raise StripeError(400, f"No such customer: '{customer}'", param="customer")
        items = form.get("line_items") or []
        price = items[0].get("price") if items else None
        if price not in self.prices:
            raise StripeError(400, f"No such price: '{price}'", param="line_items[0][price]")
        for name in ("success_url", "cancel_url"):
            if not str(form.get(name, "")).startswith(("http://", "https://")):
                raise StripeError(400, f"Not a valid URL: {name}", param=name)
        session_id = _id("cs_test")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "status": "open",
            "customer": customer,
            "client_reference_id": form.get("client_reference_id"),
            "metadata": form.get("metadata", {}),
            "subscription": None,
            "success_url": form["success_url"],
            "cancel_url": form["cancel_url"],
            "url": f"{self.public_url}/checkout/{session_id}",
            "line_items_price": price,
            "subscription_metadata": (form.get("subscription_data") or {}).get("metadata", {}),
        }
        self.sessions[session_id] = session
        return session

    def _create_portal_session(self, form: dict[str, Any]) -> dict[str, Any]:
        customer = form.get("customer")
        if customer not in self.customers:
            raise StripeError(400, f"No such customer: '{customer}'", param="customer")
        session_id = _id("bps")
        session = {
            "id": session_id,
            "object": "billing_portal.session",
            "customer": customer,
            "return_url": form.get("return_url"),
            "url": f"{self.public_url}/portal/{session_id}",
        }
        self.portal_sessions[session_id] = session
        return session

    def _list_subscriptions(self, query: dict[str, Any]) -> dict[str, Any]:
        customer = query.get("customer")
        status = query.get("status", "active")
        data = [
            subscription
            for subscription in sorted(self.subscriptions.values(), key=lambda s: s["created"], reverse=True)
            if (customer is None or subscription["customer"] == customer)
            and (status == "all" or subscription["status"] == status)
        ]
        return {"object": "list", "url": "/v1/subscriptions", "has_more": False, "data": data}

    # --- what Stripe does next (state changes and their events) ----------------------

    def complete_checkout(self, session_id: str, *, deliver: bool = True) -> list[Event]:
        """The customer paid: a subscription starts, with Stripe's events."""
        with self._lock:
            session = self._get(self.sessions, session_id, "checkout session")
            if session["status"] != "open":
                raise StripeError(400, "The session is not open.")
            now = int(time.time())
            subscription_id = _id("sub")
            subscription = {
                "id": subscription_id,
                "object": "subscription",
                "customer": session["customer"],
                "status": "active",
                "created": now,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "metadata": dict(session["subscription_metadata"]),
                "items": {
                    "object": "list",
                    "data": [
                        {
                            "id": _id("si"),
                            "object": "subscription_item",
                            "price": {"id": session["line_items_price"], "object": "price"},
                            "current_period_start": now,
                            "current_period_end": now + PERIOD_SECONDS,
                        }
                    ],
                },
            }
            self.subscriptions[subscription_id] = subscription
            session.update(status="complete", subscription=subscription_id)
            events = [
                self._event("customer.subscription.created", subscription),
                self._event("checkout.session.completed", session),
                self._event("invoice.paid", self._invoice(subscription, "paid")),
            ]
        return self._maybe_deliver(events, deliver)

    def change_price(self, subscription_id: str, price: str, *, deliver: bool = True) -> list[Event]:
        """A plan change in the Billing Portal."""
        with self._lock:
            if price not in self.prices:
                raise StripeError(400, f"No such price: '{price}'")
            subscription = self._get(self.subscriptions, subscription_id, "subscription")
            subscription["items"]["data"][0]["price"] = {"id": price, "object": "price"}
            events = [self._event("customer.subscription.updated", subscription)]
        return self._maybe_deliver(events, deliver)

    def fail_payment(self, subscription_id: str, *, deliver: bool = True) -> list[Event]:
        with self._lock:
            subscription = self._get(self.subscriptions, subscription_id, "subscription")
            subscription["status"] = "past_due"
            events = [
                self._event("invoice.payment_failed", self._invoice(subscription, "open")),
                self._event("customer.subscription.updated", subscription),
            ]
        return self._maybe_deliver(events, deliver)

    def pay(self, subscription_id: str, *, deliver: bool = True) -> list[Event]:
        with self._lock:
            subscription = self._get(self.subscriptions, subscription_id, "subscription")
            subscription["status"] = "active"
            events = [
                self._event("invoice.paid", self._invoice(subscription, "paid")),
                self._event("customer.subscription.updated", subscription),
            ]
        return self._maybe_deliver(events, deliver)

    def cancel(self, subscription_id: str, *, at_period_end: bool = False, deliver: bool = True) -> list[Event]:
        with self._lock:
            subscription = self._get(self.subscriptions, subscription_id, "subscription")
            if at_period_end:
                subscription["cancel_at_period_end"] = True
                events = [self._event("customer.subscription.updated", subscription)]
            else:
                subscription.update(status="canceled", canceled_at=int(time.time()))
                events = [self._event("customer.subscription.deleted", subscription)]
        return self._maybe_deliver(events, deliver)

    def create_customer(self, metadata: dict[str, str]) -> str:
        """A customer made in Stripe directly (the dashboard, another integration), not by Quarry."""
        with self._lock:
            return str(self._create_customer({"metadata": metadata})["id"])

    def create_session(self, customer: str, price: str, metadata: dict[str, str] | None = None) -> str:
        with self._lock:
            session = self._create_session(
                {
                    "mode": "subscription",
                    "customer": customer,
                    "line_items": [{"price": price}],
                    "subscription_data": {"metadata": metadata or {}},
                    "success_url": "https://example.com/",
                    "cancel_url": "https://example.com/",
                }
            )
            return str(session["id"])

    def event(self, event_type: str, data_object: dict[str, Any], created: int | None = None) -> Event:
        """An event as Stripe would send it, with any payload (a stale or lying one included)."""
        with self._lock:
            event = self._event(event_type, data_object)
            if created is not None:
                event.created = created
            return event

    def set_status(self, subscription_id: str, status: str) -> None:
        """Change a subscription without sending anything (a webhook that never arrived)."""
        with self._lock:
            self._get(self.subscriptions, subscription_id, "subscription")["status"] = status

    def subscription_of(self, customer: str) -> dict[str, Any]:
        with self._lock:
            found = [s for s in self.subscriptions.values() if s["customer"] == customer]
        assert found, f"{customer} has no subscription"
        return max(found, key=lambda s: s["created"])

    def customer_of(self, tenant_id: object) -> str | None:
        with self._lock:
            return next(
                (c["id"] for c in self.customers.values() if c["metadata"].get("tenant_id") == str(tenant_id)), None
            )

    def _invoice(self, subscription: dict[str, Any], status: str) -> dict[str, Any]:
        return {
            "id": _id("in"),
            "object": "invoice",
            "customer": subscription["customer"],
            "status": status,
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": subscription["id"]}},
        }

    def _event(self, event_type: str, data_object: dict[str, Any]) -> Event:
        event = Event(_id("evt"), event_type, json.loads(json.dumps(data_object)), int(time.time()))
        self.events.append(event)
        return event

    # --- webhooks -------------------------------------------------------------------

    def _maybe_deliver(self, events: list[Event], deliver: bool) -> list[Event]:
        if deliver:
            for event in events:
                response = self.deliver(event)
                if response.status_code != 200:
                    raise AssertionError(
                        f"the webhook answered {response.status_code} to {event.type}: {response.text}"
                    )
        return events

    def deliver(
        self, event: Event, *, secret: str | None = None, timestamp: int | None = None, payload: bytes | None = None
    ) -> httpx.Response:
        """POST one event to the webhook, signed (with another secret or time, to test refusals)."""
        assert self.webhook_url, "no webhook URL"
        body = event.payload() if payload is None else payload
        signature = sign(body, secret or self.webhook_secret, timestamp)
        return httpx.post(
            self.webhook_url,
            content=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json; charset=utf-8"},
            timeout=30,
        )

    def deliver_all(self, events: Iterable[Event]) -> list[int]:
        return [self.deliver(event).status_code for event in events]

    # --- HTTP -------------------------------------------------------------------------

    def serve(self, port: int = 0) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle and the client's delayed
            # ACK add ~40 ms to every keep-alive response.
            disable_nagle_algorithm = True

            def _respond(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", _id("req"))
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                try:
                    if url.path.startswith("/_fake/"):
                        self._respond(200, fake.control(url.path, json.loads(raw or "{}")))
                        return
                    result = fake.handle(method, url.path, decode_form(url.query), decode_form(raw), self.headers)
                    self._respond(200, result)
                except StripeError as error:
                    self._respond(error.status, error.body)

            def _redirect(self, location: str) -> None:
                self.send_response(303)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _page(self, html: str) -> None:
                data = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path).path.strip("/").split("/")
                try:
                    if len(parts) == 2 and parts[0] == "checkout":
                        fake.complete_checkout(parts[1])  # visiting the page is paying
                        self._redirect(fake.sessions[parts[1]]["success_url"])
                    elif len(parts) >= 2 and parts[0] == "portal":
                        self._portal(parts[1], parts[2:])
                    else:
                        self._dispatch("GET")
                except (StripeError, AssertionError) as error:
                    self._page(f"<p>{type(error).__name__}: {error}</p>")

            def _portal(self, session_id: str, action: list[str]) -> None:
                session = fake._get(fake.portal_sessions, session_id, "portal session")
                subscription = fake.subscription_of(session["customer"])["id"]
                if action[:1] == ["price"]:
                    fake.change_price(subscription, action[1])
                elif action == ["fail_payment"]:
                    fake.fail_payment(subscription)
                elif action == ["pay"]:
                    fake.pay(subscription)
                elif action == ["cancel"]:
                    fake.cancel(subscription)
                if action:
                    self._redirect(session["return_url"])
                    return
                links = [
                    f'<li><a href="/portal/{session_id}/price/{p}">switch to {n}</a></li>'
                    for p, n in fake.prices.items()
                ]
                links += [
                    f'<li><a href="/portal/{session_id}/{step}">{step.replace("_", " ")}</a></li>'
                    for step in ("fail_payment", "pay", "cancel")
                ]
                self._page(f"<h1>Local Billing Portal</h1><p>{subscription}</p><ul>{''.join(links)}</ul>")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        host, bound = self._httpd.server_address[:2]
        self.public_url = f"http://{host!s}:{bound}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="fake-stripe").start()
        return self

    @property
    def url(self) -> str:
        return self.public_url

    def gateway_env(self) -> dict[str, str]:
        """The billing settings of a gateway or worker that uses this Stripe."""
        pro, enterprise = list(self.prices)[:2]
        return {
            "STRIPE_SECRET_KEY": self.api_key,
            "STRIPE_API_BASE": self.url,
            "STRIPE_PRICE_PRO": pro,
            "STRIPE_PRICE_ENTERPRISE": enterprise,
            "BILLING_SUCCESS_URL": "https://app.example.com/billing/done",
            "BILLING_CANCEL_URL": "https://app.example.com/billing",
            "BILLING_RETURN_URL": "https://app.example.com/account",
            "BILLING_REDIRECT_ORIGINS": "https://app.example.com,http://localhost:3000",
        }

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def control(self, path: str, body: dict[str, Any]) -> Any:
        """`/_fake/<step>` with a JSON body: the same steps for processes that cannot call Python."""
        step = path.removeprefix("/_fake/")
        if step == "complete_checkout":
            return [e.id for e in self.complete_checkout(body["session"], deliver=body.get("deliver", True))]
        if step == "change_price":
            return [e.id for e in self.change_price(body["subscription"], body["price"])]
        if step == "fail_payment":
            return [e.id for e in self.fail_payment(body["subscription"])]
        if step == "pay":
            return [e.id for e in self.pay(body["subscription"])]
        if step == "cancel":
            return [e.id for e in self.cancel(body["subscription"], at_period_end=body.get("at_period_end", False))]
        if step == "subscription_of":
            return self.subscription_of(body["customer"])
        if step == "deliver":
            event = next(e for e in self.events if e.id == body["event"])
            return {"status": self.deliver(event).status_code}
        raise StripeError(404, f"no such fake step {step!r}")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Stripe (dev mode and benchmarks only).")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default="sk_test_quarry_fake")
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default="whsec_quarry_fake")
    parser.add_argument("--price", action="append", default=[], help="price id=Name (default: the two test prices)")
    args = parser.parse_args()
    if os.environ.get("QUARRY_ENV") == "production":
        raise SystemExit("the local Stripe does not run with QUARRY_ENV=production")
    prices = dict(item.split("=", 1) for item in args.price) if args.price else dict(DEFAULT_PRICES)
    fake = FakeStripe(
        api_key=args.api_key, prices=prices, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret
    ).serve(args.port)
    print(f"fake Stripe on {fake.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
