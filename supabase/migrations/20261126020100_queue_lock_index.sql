-- Queue: index same-lock lookups.
--
-- procrastinate's fetch looks for queued or running jobs sharing a lock; every
-- ingest job has one (its document).  Its own (id, lock) index cannot serve
-- `lock = …`, so without this one each fetch compares every queued job with
-- every other: a worker fetching ~1 job/s with 5,000 queued, ~14/s with it.
-- internal.fail_abandoned_documents uses the same predicate.

-- indexes

create index procrastinate_jobs_active_lock_idx on procrastinate.procrastinate_jobs (lock)
where status in ('todo', 'doing');
