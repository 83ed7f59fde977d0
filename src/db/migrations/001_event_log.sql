-- The append-only event log: one stream per document.
create table docpipe.events (
  global_position bigint generated always as identity primary key,
  event_id uuid not null default gen_random_uuid() unique,
  stream_id uuid not null,
  stream_version integer not null check (stream_version > 0),
  type text not null,
  type_version smallint not null,
  data jsonb not null,
  metadata jsonb not null,
  -- Readers by position only see rows below pg_snapshot_xmin(pg_current_snapshot()), so a
  -- transaction that took its identity value early but committed late is never skipped.
  transaction_id xid8 not null default pg_current_xact_id(),
  created_at timestamptz not null default now(),
  -- Optimistic concurrency: two appends at the same expected version collide here.
  constraint events_stream_version_unique unique (stream_id, stream_version)
);

create index events_transaction_position_idx on docpipe.events (transaction_id, global_position);

-- The log is append-only: updates and deletes are refused, whoever asks.
create function docpipe.refuse_event_mutation() returns trigger language plpgsql as $$
begin
  raise exception 'docpipe.events is append-only (% refused)', tg_op using errcode = 'restrict_violation';
end $$;

create trigger events_append_only before update or delete on docpipe.events
  for each row execute function docpipe.refuse_event_mutation();
create trigger events_no_truncate before truncate on docpipe.events
  for each statement execute function docpipe.refuse_event_mutation();
