-- Read models, kept current inline (in the append's transaction) and rebuildable from the log.
create table docpipe.document_status (
  id uuid primary key,
  owner_id text not null,
  file_name text not null,
  media_type text not null,
  size_bytes bigint not null,
  sha256 text not null,
  storage_key text not null,
  status text not null check (status in ('uploaded', 'parsing', 'parsed', 'embedding', 'ready', 'failed', 'deleted')),
  stage text check (stage in ('parse', 'embed')),
  progress smallint not null default 0 check (progress between 0 and 100),
  run integer not null default 1,
  parse_attempts integer not null default 0,
  embed_attempts integer not null default 0,
  error_code text,
  error_message text,
  chunk_count integer not null default 0,
  batches_total integer not null default 0,
  batches_done integer not null default 0,
  version integer not null,
  uploaded_at timestamptz not null,
  parse_started_at timestamptz,
  parsed_at timestamptz,
  embed_started_at timestamptz,
  ready_at timestamptz,
  failed_at timestamptz,
  deleted_at timestamptz,
  updated_at timestamptz not null
);

-- GET /v1/documents: the caller's documents, newest first, keyset pagination.
create index document_status_owner_list_idx on docpipe.document_status (owner_id, uploaded_at desc, id desc);
create index document_status_owner_status_idx on docpipe.document_status (owner_id, status, uploaded_at desc, id desc);

-- Chunks and vectors of a document's current run. Written by the embed stage in the same
-- transaction as the event that accounts for them; vectors do not belong in the log.
create table docpipe.document_chunks (
  document_id uuid not null,
  chunk_index integer not null,
  run integer not null,
  content text not null,
  token_count integer not null,
  embedding real[],
  primary key (document_id, chunk_index)
);

-- Upload idempotency: (owner, key) -> document, written with DocumentUploaded.
create table docpipe.idempotency_keys (
  owner_id text not null,
  key text not null,
  document_id uuid not null,
  sha256 text not null,
  created_at timestamptz not null default now(),
  primary key (owner_id, key)
);
