// The Stripe webhook: verify, then in one transaction record the event,
// lock its customer, re-fetch the subscription from Stripe and apply it.
//
// Nothing here trusts the event's payload beyond which object it is about:
// the state written is the subscription as Stripe answers now (events arrive
// out of order), and the tenant is whoever app.billing_customers binds the
// customer to (the SQL side refuses anything else).  A bad request (missing
// or wrong signature, a timestamp outside the tolerance, a body over 1 MB,
// malformed JSON) is a 400 and writes nothing; a failure of the database or
// of Stripe is a 5xx, so Stripe delivers the event again.
import type Stripe from "stripe";

export const MAX_BODY_BYTES = 1024 * 1024;
export const TOLERANCE_SECONDS = 300;

export type ClaimOutcome = "new" | "duplicate" | "ignored" | "failed";

export interface ClaimedEvent {
  id: string;
  type: string;
  customer: string | null;
  objectId: string | null;
  created: number;
}

/** What one transaction may do: exactly the webhook role's three functions. */
export interface Transaction {
  claim(event: ClaimedEvent): Promise<ClaimOutcome>;
  apply(eventId: string, customer: string, subscription: unknown): Promise<string>;
  fail(eventId: string, reason: string): Promise<void>;
}

export interface Store {
  transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T>;
}

export interface Dependencies {
  stripe: Stripe;
  store: Store;
  /** The signing secrets accepted now: the current one, and the previous one while rotating. */
  secrets: string[];
  cryptoProvider: Stripe.CryptoProvider;
  log?: (entry: Record<string, unknown>) => void;
}

class BadRequest extends Error {}

function json(status: number, body: Record<string, unknown>): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

async function readBody(request: Request): Promise<string> {
  const declared = Number(request.headers.get("Content-Length") ?? "0");
  if (declared > MAX_BODY_BYTES) throw new BadRequest("body over 1 MB");
  if (request.body === null) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel();
      throw new BadRequest("body over 1 MB");
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder("utf-8", { fatal: true }).decode(body);
}

/** stripe-node's tolerance refuses old signatures only; one from the future is as suspect. */
function refuseFutureTimestamp(signature: string): void {
  const stamp = signature.split(",").map((part) => part.trim()).find((part) => part.startsWith("t="));
  const signedAt = Number(stamp?.slice(2));
  if (Number.isFinite(signedAt) && signedAt > Date.now() / 1000 + TOLERANCE_SECONDS) {
    throw new BadRequest("timestamp outside the tolerance");
  }
}

async function verify(deps: Dependencies, body: string, signature: string): Promise<Stripe.Event> {
  refuseFutureTimestamp(signature);
  for (const secret of deps.secrets) {
    try {
      return await deps.stripe.webhooks.constructEventAsync(
        body,
        signature,
        secret,
        TOLERANCE_SECONDS,
        deps.cryptoProvider,
      );
    } catch (error) {
      if (error instanceof SyntaxError) throw new BadRequest("malformed JSON");
      // A signature error: try the next secret (rotation).
    }
  }
  throw new BadRequest("no valid signature");
}

function idOf(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { id?: unknown }).id === "string") {
    return (value as { id: string }).id;
  }
  return null;
}

/** The customer and the subscription an event is about (its state is fetched, never read from here). */
export function subjectOf(event: Stripe.Event): { customer: string | null; subscription: string | null } {
  const object = event.data.object as unknown as Record<string, unknown>;
  const customer = idOf(object.customer);
  if (event.type.startsWith("customer.subscription.")) return { customer, subscription: idOf(object.id) };
  if (event.type === "checkout.session.completed") {
    return { customer, subscription: idOf(object.subscription) };
  }
  if (event.type.startsWith("invoice.")) {
    const parent = object.parent as { subscription_details?: { subscription?: unknown } } | null | undefined;
    return {
      customer,
      subscription: idOf(parent?.subscription_details?.subscription) ?? idOf(object.subscription),
    };
  }
  return { customer, subscription: null };
}

function isNotFound(error: unknown): boolean {
  const stripeError = error as { type?: string; statusCode?: number };
  return stripeError?.type === "StripeInvalidRequestError" && stripeError.statusCode === 404;
}

export function createHandler(deps: Dependencies): (request: Request) => Promise<Response> {
  const log = deps.log ?? ((entry) => console.log(JSON.stringify(entry)));
  return async (request: Request): Promise<Response> => {
    if (request.method !== "POST") return json(405, { error: "POST only" });
    const signature = request.headers.get("Stripe-Signature");
    let event: Stripe.Event;
    try {
      if (!signature) throw new BadRequest("no Stripe-Signature header");
      const body = await readBody(request);
      event = await verify(deps, body, signature);
    } catch (error) {
      const reason = error instanceof BadRequest ? error.message : "unreadable body";
      log({ level: "warning", msg: "webhook refused", reason });
      return json(400, { error: reason });
    }
    const { customer, subscription } = subjectOf(event);
    const object = event.data.object as unknown as Record<string, unknown>;
    try {
      const outcome = await deps.store.transaction(async (tx) => {
        const claimed = await tx.claim({
          id: event.id,
          type: event.type,
          customer,
          objectId: idOf(object.id),
          created: event.created,
        });
        if (claimed !== "new" || customer === null) return claimed;
        if (subscription === null) {
          await tx.fail(event.id, "The event names no subscription.");
          return "failed";
        }
        let current: Stripe.Subscription;
        try {
          current = await deps.stripe.subscriptions.retrieve(subscription);
        } catch (error) {
          if (!isNotFound(error)) throw error;
          await tx.fail(event.id, "Stripe has no such subscription.");
          return "failed";
        }
        return await tx.apply(event.id, customer, current);
      });
      log({ level: "info", msg: "webhook handled", event: event.id, type: event.type, outcome });
      return json(200, { received: true, outcome });
    } catch (error) {
      // Nothing committed: Stripe retries.  Log the kind, never the message (it may carry data).
      const kind = (error as { name?: string; code?: string })?.code ?? (error as Error)?.name ?? "Error";
      log({ level: "error", msg: "webhook failed", event: event.id, type: event.type, kind });
      return json(503, { error: "temporarily unavailable" });
    }
  };
}
