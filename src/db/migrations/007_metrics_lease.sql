-- Which process samples the database for the deployment-wide gauges (queue depths and ages,
-- documents by status, connections): one row, held by one process at a time and renewed each
-- sampling interval; a holder that stopped renewing is replaced once its lease has expired
-- (observability/sampler.ts).
create table docpipe.metrics_lease (
  id boolean primary key default true check (id),
  holder text not null,
  expires_at timestamptz not null
);
