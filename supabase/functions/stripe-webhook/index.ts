// supabase functions deploy stripe-webhook (config.toml: verify_jwt = false,
// Stripe signs its requests instead).  Settings: STRIPE_SECRET_KEY,
// STRIPE_WEBHOOK_SECRET (and STRIPE_WEBHOOK_SECRET_PREVIOUS while rotating),
// SUPABASE_DB_URL (given by Supabase); STRIPE_API_BASE and PORT only for the
// local Stripe of tests and `make dev`.
import Stripe from "stripe";
import { createHandler } from "./handler.ts";
import { postgresStore } from "./db.ts";

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

/** stripe-node's documented host/port/protocol for another Stripe API (the local one). */
export function endpointOf(
  base: string | undefined,
): { host?: string; port?: number; protocol?: "http" | "https" } {
  if (!base) return {};
  const url = new URL(base);
  const protocol = url.protocol === "https:" ? "https" : "http";
  return {
    host: url.hostname,
    port: Number(url.port || (protocol === "https" ? 443 : 80)),
    protocol,
  };
}

if (import.meta.main) {
  const stripe = new Stripe(required("STRIPE_SECRET_KEY"), {
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: 2,
    timeout: 10_000,
    ...endpointOf(Deno.env.get("STRIPE_API_BASE")),
  });
  const secrets = [required("STRIPE_WEBHOOK_SECRET"), Deno.env.get("STRIPE_WEBHOOK_SECRET_PREVIOUS") ?? ""]
    .filter((secret) => secret !== "");
  const handler = createHandler({
    stripe,
    store: postgresStore(required("SUPABASE_DB_URL")),
    secrets,
    cryptoProvider: Stripe.createSubtleCryptoProvider(),
  });
  const port = Deno.env.get("PORT");
  if (port) {
    Deno.serve({ port: Number(port), hostname: "127.0.0.1", onListen: () => {} }, handler);
  } else {
    Deno.serve(handler);
  }
}
