// The webhook's database access: one transaction per event, as the role
// quarry_webhook, which may call the three functions below and nothing else.
// SUPABASE_DB_URL is what Supabase gives every Edge Function; `set local
// role` narrows whatever it logs in as (in dev and tests it logs in as
// quarry_webhook itself).  Prepared statements are off so a transaction
// pooler (Supavisor) works too.
import postgres from "postgres";
import type { ClaimedEvent, ClaimOutcome, Store, Transaction } from "./handler.ts";

export interface ClosableStore extends Store {
  close(): Promise<void>;
}

export function postgresStore(url: string): ClosableStore {
  const sql = postgres(url, {
    max: 4,
    prepare: false,
    idle_timeout: 30,
    connect_timeout: 10,
    onnotice: () => {},
    connection: { application_name: "stripe-webhook" },
  });
  return {
    async transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
      return await sql.begin(async (tx) => {
        await tx`set local role quarry_webhook`;
        return await work({
          async claim(event: ClaimedEvent): Promise<ClaimOutcome> {
            const [row] = await tx`
              select internal.claim_stripe_event(
                ${event.id}, ${event.type}, ${event.customer}, ${event.objectId}, to_timestamp(${event.created})
              ) as outcome`;
            return row.outcome as ClaimOutcome;
          },
          async apply(eventId: string, customer: string, subscription: unknown): Promise<string> {
            const [row] = await tx`
              select internal.apply_stripe_subscription(
                ${eventId}, ${customer}, ${tx.json(subscription as postgres.JSONValue)}::jsonb
              ) as outcome`;
            return row.outcome as string;
          },
          async fail(eventId: string, reason: string): Promise<void> {
            await tx`select internal.fail_stripe_event(${eventId}, ${reason})`;
          },
        });
      }) as unknown as T;
    },
    async close(): Promise<void> {
      await sql.end({ timeout: 5 });
    },
  };
}
