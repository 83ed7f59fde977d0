// Housekeeping, run by the worker on a pg-boss schedule (every 15 minutes, once across all
// workers): fold the usage deltas into the daily rows, forget old webhook deliveries and audit rows past their retention (their ids only matter while a provider may still
// redeliver), and remove direct-upload reservations that were never registered, with whatever
// the client uploaded for them.
import type { Sql } from '../db/client.ts';
import type { Logger } from '../observability/logger.ts';
import type { Storage } from '../providers/types.ts';
import { rollupUsage } from '../projections/usage.ts';
import { pruneAudit } from '../security/audit.ts';
import { documentPrefix } from './pipeline.ts';

export interface MaintenanceDeps {
  sql: Sql;
  storage: Storage;
  /** Webhook delivery ids are kept this long (LlamaCloud redelivers within seconds). */
  webhookRetentionDays: number;
  /** Rows of the audit log are kept this long (AUDIT_RETENTION_DAYS). */
  auditRetentionDays: number;
}

/** A registration that began just before its reservation expired still finishes first. */
const EXPIRY_GRACE = '1 hour';
const BATCH = 500;

export interface MaintenanceReport {
  webhookDeliveriesDeleted: number;
  expiredUploadsRemoved: number;
  auditRowsDeleted: number;
  /** Rows of usage_deltas folded into usage_daily. */
  usageRowsRolledUp: number;
}

export async function runMaintenance(deps: MaintenanceDeps, log: Logger): Promise<MaintenanceReport> {
  const { sql } = deps;
  const report: MaintenanceReport = { webhookDeliveriesDeleted: 0, expiredUploadsRemoved: 0, auditRowsDeleted: 0, usageRowsRolledUp: 0 };
  report.usageRowsRolledUp = await rollupUsage(sql).catch((err: unknown) => {
    log.error({ err }, 'usage roll-up failed; retried at the next run (readers add the deltas up meanwhile)');
    return 0;
  });
  // A failure here must not keep the rest from running.
  report.auditRowsDeleted = await pruneAudit(sql, deps.auditRetentionDays).catch((err: unknown) => {
    log.error({ err }, 'audit log retention failed; retried at the next run');
    return 0;
  });

  // Bounded batches: a long backlog never becomes one huge transaction.
  for (;;) {
    const deleted = await sql`
      delete from docpipe.webhook_deliveries where (provider, event_id) in (
        select provider, event_id from docpipe.webhook_deliveries
        where received_at < now() - make_interval(days => ${deps.webhookRetentionDays})
        limit ${BATCH * 10})`;
    report.webhookDeliveriesDeleted += deleted.count;
    if (deleted.count < BATCH * 10) break;
  }

  for (;;) {
    const expired = await sql<{ document_id: string }[]>`
      select document_id from docpipe.pending_uploads
      where expires_at < now() - ${EXPIRY_GRACE}::interval
      order by expires_at limit ${BATCH}`;
    for (const { document_id: id } of expired) {
      // Files first: if this fails, the row stays and the next run tries again.
      await deps.storage.deletePrefix(documentPrefix(id));
      await sql`delete from docpipe.pending_uploads where document_id = ${id} and expires_at < now() - ${EXPIRY_GRACE}::interval`;
      report.expiredUploadsRemoved++;
    }
    if (expired.length < BATCH) break;
  }
  if (report.webhookDeliveriesDeleted + report.expiredUploadsRemoved + report.auditRowsDeleted > 0) log.info(report, 'maintenance done');
  return report;
}
