-- External providers: webhook de-duplication, the shared rate budget of the embedder, and
-- direct-to-storage uploads awaiting registration.

-- One row per webhook delivery accepted by the webhook service, inserted in the transaction
-- that appends its event: a redelivery (same event id) finds the row and appends nothing.
create table docpipe.webhook_deliveries (
  provider text not null,
  event_id text not null,
  document_id uuid not null,
  provider_job_id text,
  event_type text not null,
  outcome text not null check (outcome in ('appended', 'ignored')),
  received_at timestamptz not null default now(),
  primary key (provider, event_id)
);
create index webhook_deliveries_received_idx on docpipe.webhook_deliveries (received_at);

-- Token buckets shared by every worker process (OpenAI requests/min and tokens/min).
-- `blocked_until` is set from a 429's Retry-After so the whole fleet backs off, not one worker.
create table docpipe.rate_buckets (
  name text primary key,
  tokens double precision not null,
  updated_at timestamptz not null default clock_timestamp(),
  blocked_until timestamptz
);

-- POST /v1/uploads reserves a document id and a storage key; POST /v1/documents with the
-- upload id registers it once the client has PUT the bytes. Rows go with the registration.
create table docpipe.pending_uploads (
  document_id uuid primary key,
  owner_id text not null,
  storage_key text not null,
  file_name text not null,
  declared_size bigint not null check (declared_size > 0),
  declared_type text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null
);
create index pending_uploads_expires_idx on docpipe.pending_uploads (expires_at);

-- The provider's job for the current run (LlamaParse job id), shown by GET /v1/documents/:id.
-- PARTIAL_SUCCESS: the provider's code and message, kept beside a parse that otherwise succeeded.
alter table docpipe.document_status
  add column parser_job_id text,
  add column parse_warning_code text,
  add column parse_warning_message text;
