// The handler against an in-memory store and a stubbed Stripe API: what is
// refused (400, nothing written), what is retried (5xx), what is re-fetched.
// The end-to-end run against Postgres and the local Stripe is in pytest
// (tests/py/gateway/billing/test_webhook.py).
import { strict as assert } from "node:assert";
import Stripe from "stripe";
import {
  type ClaimedEvent,
  type ClaimOutcome,
  createHandler,
  MAX_BODY_BYTES,
  type Store,
} from "./handler.ts";
import { endpointOf } from "./index.ts";

const SECRET = "whsec_test_current";
const PREVIOUS = "whsec_test_previous";
const crypto = Stripe.createSubtleCryptoProvider();

interface Recorded {
  claims: ClaimedEvent[];
  applied: { eventId: string; customer: string; subscription: Record<string, unknown> }[];
  failed: { eventId: string; reason: string }[];
  committed: number;
}

function memoryStore(options: { failWith?: Error; claim?: ClaimOutcome } = {}): Store & { seen: Recorded } {
  const seen: Recorded = { claims: [], applied: [], failed: [], committed: 0 };
  return {
    seen,
    async transaction(work) {
      if (options.failWith) throw options.failWith;
      const pending: Recorded = { claims: [], applied: [], failed: [], committed: 0 };
      const result = await work({
        claim: (event) => {
          pending.claims.push(event);
          return Promise.resolve(options.claim ?? "new");
        },
        apply: (eventId, customer, subscription) => {
          pending.applied.push({ eventId, customer, subscription: subscription as Record<string, unknown> });
          return Promise.resolve("applied");
        },
        fail: (eventId, reason) => {
          pending.failed.push({ eventId, reason });
          return Promise.resolve();
        },
      });
      seen.claims.push(...pending.claims);
      seen.applied.push(...pending.applied);
      seen.failed.push(...pending.failed);
      seen.committed += 1;
      return result;
    },
  };
}

/** A Stripe client whose API answers every subscription retrieve with `status` (or 404 / 500). */
function stubStripe(answer: { status?: string; code?: number } = {}): { stripe: Stripe; requests: string[] } {
  const requests: string[] = [];
  const fetchStub = (input: string | URL | Request): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : input.toString());
    requests.push(url.pathname);
    const code = answer.code ?? 200;
    const id = url.pathname.split("/").pop();
    const body = code === 200
      ? {
        id,
        object: "subscription",
        customer: "cus_1",
        status: answer.status ?? "active",
        items: { data: [] },
      }
      : { error: { type: code === 404 ? "invalid_request_error" : "api_error", message: "stub" } };
    return Promise.resolve(
      new Response(JSON.stringify(body), { status: code, headers: { "Content-Type": "application/json" } }),
    );
  };
  const stripe = new Stripe("sk_test_stub", {
    httpClient: Stripe.createFetchHttpClient(fetchStub as typeof fetch),
    maxNetworkRetries: 0,
  });
  return { stripe, requests };
}

function event(type: string, object: Record<string, unknown>, id = "evt_1"): string {
  return JSON.stringify({
    id,
    object: "event",
    type,
    created: Math.floor(Date.now() / 1000),
    data: { object },
  });
}

async function signed(
  body: string,
  secret = SECRET,
  timestamp = Math.floor(Date.now() / 1000),
): Promise<Request> {
  const { stripe } = stubStripe();
  const header = await stripe.webhooks.generateTestHeaderStringAsync({
    payload: body,
    secret,
    timestamp,
    cryptoProvider: crypto,
  });
  return new Request("http://localhost/stripe-webhook", {
    method: "POST",
    body,
    headers: { "Stripe-Signature": header, "Content-Type": "application/json" },
  });
}

function handlerWith(store: Store, stripe: Stripe) {
  return createHandler({ stripe, store, secrets: [SECRET, PREVIOUS], cryptoProvider: crypto, log: () => {} });
}

const UPDATED = event("customer.subscription.updated", {
  id: "sub_1",
  customer: "cus_1",
  status: "incomplete",
});

Deno.test("a signed event is claimed, its subscription re-fetched and applied as Stripe has it now", async () => {
  const store = memoryStore();
  const { stripe, requests } = stubStripe({ status: "active" });
  const response = await handlerWith(store, stripe)(await signed(UPDATED));
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { received: true, outcome: "applied" });
  assert.deepEqual(requests, ["/v1/subscriptions/sub_1"]);
  assert.equal(store.seen.claims[0].id, "evt_1");
  assert.equal(store.seen.claims[0].customer, "cus_1");
  assert.equal(
    store.seen.applied[0].subscription.status,
    "active",
    "the payload's incomplete is not trusted",
  );
});

Deno.test("the previous secret is still accepted while rotating", async () => {
  const store = memoryStore();
  const response = await handlerWith(store, stubStripe().stripe)(await signed(UPDATED, PREVIOUS));
  assert.equal(response.status, 200);
  assert.equal(store.seen.applied.length, 1);
});

Deno.test("invoice events name their subscription through parent.subscription_details", async () => {
  const store = memoryStore();
  const { stripe, requests } = stubStripe({ status: "past_due" });
  const body = event("invoice.payment_failed", {
    id: "in_1",
    customer: "cus_1",
    parent: { subscription_details: { subscription: "sub_9" } },
  });
  const response = await handlerWith(store, stripe)(await signed(body));
  assert.equal(response.status, 200);
  assert.deepEqual(requests, ["/v1/subscriptions/sub_9"]);
  assert.equal(store.seen.applied[0].subscription.status, "past_due");
});

for (
  const [name, request] of [
    ["a forged signature", () => signed(UPDATED, "whsec_forged")],
    [
      "a timestamp older than the tolerance",
      () => signed(UPDATED, SECRET, Math.floor(Date.now() / 1000) - 301),
    ],
    [
      "a timestamp further in the future than the tolerance",
      () => signed(UPDATED, SECRET, Math.floor(Date.now() / 1000) + 301),
    ],
    [
      "no signature header",
      () => Promise.resolve(new Request("http://localhost/", { method: "POST", body: UPDATED })),
    ],
    ["a body over 1 MB", () => signed(JSON.stringify({ padding: "x".repeat(MAX_BODY_BYTES) }))],
    ["malformed JSON", () => signed("{not json")],
  ] as const
) {
  Deno.test(`${name} is refused with 400 and nothing is written`, async () => {
    const store = memoryStore();
    const { stripe, requests } = stubStripe();
    const response = await handlerWith(store, stripe)(await request());
    assert.equal(response.status, 400);
    await response.body?.cancel();
    assert.equal(store.seen.committed, 0);
    assert.deepEqual(requests, []);
  });
}

Deno.test("a database failure answers 503 so that Stripe retries", async () => {
  const store = memoryStore({ failWith: new Error("connection refused") });
  const response = await handlerWith(store, stubStripe().stripe)(await signed(UPDATED));
  assert.equal(response.status, 503);
  await response.body?.cancel();
});

Deno.test("a Stripe outage during the re-fetch answers 5xx and commits nothing", async () => {
  const store = memoryStore();
  const response = await handlerWith(store, stubStripe({ code: 500 }).stripe)(await signed(UPDATED));
  assert.equal(response.status, 503);
  await response.body?.cancel();
  assert.equal(store.seen.committed, 0);
});

Deno.test("a subscription Stripe does not know is recorded as failed (200: a retry cannot help)", async () => {
  const store = memoryStore();
  const response = await handlerWith(store, stubStripe({ code: 404 }).stripe)(await signed(UPDATED));
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { received: true, outcome: "failed" });
  assert.equal(store.seen.failed[0].eventId, "evt_1");
  assert.equal(store.seen.applied.length, 0);
});

for (const outcome of ["duplicate", "ignored"] as const) {
  Deno.test(`a ${outcome} event answers 200 without asking Stripe anything`, async () => {
    const store = memoryStore({ claim: outcome });
    const { stripe, requests } = stubStripe();
    const response = await handlerWith(store, stripe)(await signed(UPDATED));
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { received: true, outcome });
    assert.deepEqual(requests, []);
    assert.equal(store.seen.applied.length, 0);
  });
}

Deno.test("other methods are refused", async () => {
  const response = await handlerWith(memoryStore(), stubStripe().stripe)(new Request("http://localhost/"));
  assert.equal(response.status, 405);
  await response.body?.cancel();
});

Deno.test("STRIPE_API_BASE becomes stripe-node's host, port and protocol", () => {
  assert.deepEqual(endpointOf("http://127.0.0.1:12111"), {
    host: "127.0.0.1",
    port: 12111,
    protocol: "http",
  });
  assert.deepEqual(endpointOf(undefined), {});
});
