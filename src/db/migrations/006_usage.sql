-- Per-owner usage per UTC day: documents uploaded, their bytes, pages parsed and tokens chunked
-- for the embedder. A read model like document_status: added to inline, in the transaction of
-- the events that account for it (as rows of usage_deltas, below, folded in here by the
-- maintenance job; src/projections/usage.ts), and rebuilt from the log by
-- `docpipe rebuild-projections`. Read by GET /v1/usage (one owner) and `docpipe usage`
-- (operators, across owners). No grants and no row-level security, like the other tables: only
-- docpipe's own role reads it (docs/PROVIDERS.md, "Usage and cost", for exposing it to clients).
create table docpipe.usage_daily (
  owner_id text not null,
  day date not null,
  documents bigint not null default 0,
  bytes bigint not null default 0,
  pages bigint not null default 0,
  tokens bigint not null default 0,
  primary key (owner_id, day)
);

-- `docpipe usage`: every owner's rows over a range of days. One owner's range uses the key.
create index usage_daily_day_idx on docpipe.usage_daily (day);

-- What the command transactions add: one row per owner and day that a transaction's events
-- touched, inserted and never updated, so that one owner's concurrent uploads do not queue on
-- the lock of their usage_daily row (each would wait for the previous one's commit). The
-- maintenance job folds them into usage_daily (rollupUsage, src/projections/usage.ts); readers
-- add the two tables up.
create table docpipe.usage_deltas (
  owner_id text not null,
  day date not null,
  documents bigint not null default 0,
  bytes bigint not null default 0,
  pages bigint not null default 0,
  tokens bigint not null default 0
);

create index usage_deltas_owner_day_idx on docpipe.usage_deltas (owner_id, day);
