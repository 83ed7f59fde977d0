-- The security audit log: who did what to what, from where, and how it ended. Append-only like
-- the event log; the only deletion is retention, by the maintenance job, of rows older than the
-- cutoff it declares in its own transaction (`set local docpipe.audit_prune_before`).
create table docpipe.audit_log (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  -- user:<sub>, address:<ip>, service:<name>: whoever the row is about.
  actor text not null,
  role text,
  -- auth.denied, document.delete, ratelimit.refused, block.address, ...
  action text not null,
  target text,
  -- success, denied, refused, flagged, blocked
  outcome text not null,
  client_address text,
  user_agent text,
  request_id text,
  -- Aggregated rows (denied authentication per address and minute) count their occurrences.
  occurrences integer not null default 1 check (occurrences >= 1),
  details jsonb not null default '{}'::jsonb
);
create index audit_log_at on docpipe.audit_log (at);
create index audit_log_actor_at on docpipe.audit_log (actor, at);
create index audit_log_action_at on docpipe.audit_log (action, at);

create function docpipe.guard_audit_log() returns trigger language plpgsql as $$
declare
  cutoff text := current_setting('docpipe.audit_prune_before', true);
begin
  if tg_op = 'INSERT' then
    new.at := now(); -- the time is the database's, never the writer's
    return new;
  end if;
  if tg_op = 'DELETE' and coalesce(cutoff, '') <> '' and old.at < cutoff::timestamptz then
    return old;
  end if;
  raise exception 'docpipe.audit_log is append-only (% refused)', tg_op using errcode = 'restrict_violation';
end $$;
create trigger audit_log_guard before insert or update or delete on docpipe.audit_log
  for each row execute function docpipe.guard_audit_log();
create trigger audit_log_no_truncate before truncate on docpipe.audit_log
  for each statement execute function docpipe.refuse_event_mutation();
