// `docpipe rebuild-projections`: replays the log into the read models in one transaction.
// document_chunks is not replayed (vectors are not in the log, by design) but reconciled: rows
// of deleted documents or of a run that is no longer current are removed.
import type { Sql } from '../db/client.ts';
import { rebuildDocumentStatus } from './document-status.ts';
import { rebuildUsage } from './usage.ts';

export async function rebuildProjections(sql: Sql): Promise<{ events: number; documents: number; usageRows: number; orphanChunksRemoved: number }> {
  return sql.begin(async (tx) => {
    // document_status first: its lock is the one every appender meets first (its inline write
    // comes before the usage write), so appenders queue there, and no two locks cross.
    const status = await rebuildDocumentStatus(tx);
    const usage = await rebuildUsage(tx);
    const removed = await tx`
      delete from docpipe.document_chunks c
      where not exists (
        select 1 from docpipe.document_status s
        where s.id = c.document_id and s.status <> 'deleted' and s.run = c.run
      )`;
    return { ...status, ...usage, orphanChunksRemoved: removed.count };
  });
}
