// The maintenance job against a real Postgres and storage: old webhook delivery ids go, recent
// ones stay; reservations that expired (beyond the grace hour) go with their uploaded files;
// live ones stay; a registration after the sweep answers clearly.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { runMaintenance } from '../../src/documents/maintenance.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { startBoss } from '../../src/queue/boss.ts';
import { QUEUES } from '../../src/queue/jobs.ts';
import { api, startStack, type TestStack } from '../helpers/stack.ts';

const stack: TestStack = await startStack();
const sql = stack.db.sql;
const storage = stack.runtime.providers.storage;
const deps = { sql, storage, webhookRetentionDays: 7, auditRetentionDays: 90 };

async function delivery(ageDays: number): Promise<string> {
  const id = randomUUID();
  await sql`insert into docpipe.webhook_deliveries (provider, event_id, document_id, event_type, outcome, received_at)
            values ('llamaparse', ${id}, ${randomUUID()}, 'parse.success', 'appended', now() - make_interval(days => ${ageDays}))`;
  return id;
}

async function reservation(expiresInMinutes: number): Promise<string> {
  const id = randomUUID();
  const key = `documents/${id}/original`;
  await storage.put(key, Readable.from([Buffer.from('uploaded but never registered')]));
  await sql`insert into docpipe.pending_uploads (document_id, owner_id, storage_key, file_name, declared_size, declared_type, expires_at)
            values (${id}, 'user-a', ${key}, 'a.txt', 29, 'text/plain', now() + make_interval(mins => ${expiresInMinutes}))`;
  return id;
}

const exists = async (id: string) => (await storage.stat(`documents/${id}/original`)) !== null;
const pending = async (id: string) => (await sql`select 1 from docpipe.pending_uploads where document_id = ${id}`).length === 1;

test('old delivery ids and long-expired reservations go; the rest stays', async () => {
  const old = await delivery(8);
  const recent = await delivery(1);
  const longExpired = await reservation(-120);
  const justExpired = await reservation(-5);
  const live = await reservation(60);

  const report = await runMaintenance(deps, createLogger('silent'));
  assert.ok(report.webhookDeliveriesDeleted >= 1);
  assert.equal(report.expiredUploadsRemoved, 1);
  const left = (await sql<{ event_id: string }[]>`select event_id from docpipe.webhook_deliveries where event_id in (${old}, ${recent})`).map((r) => r.event_id);
  assert.deepEqual(left, [recent]);
  assert.equal(await pending(longExpired), false);
  assert.equal(await exists(longExpired), false, 'the orphaned upload is removed');
  assert.equal(await pending(justExpired), true, 'within the grace hour');
  assert.equal(await exists(justExpired), true);
  assert.equal(await pending(live), true);
  assert.equal(await exists(live), true);

  // Registering the swept reservation: a clear refusal, no document.
  const res = await api(stack)('/v1/documents', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ uploadId: longExpired }) });
  assert.equal(res.status, 404);
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'UPLOAD_NOT_FOUND');

  // A second run finds nothing more to do.
  assert.deepEqual(await runMaintenance(deps, createLogger('silent')), { webhookDeliveriesDeleted: 0, expiredUploadsRemoved: 0, auditRowsDeleted: 0, usageRowsRolledUp: 0 });
});

test('the worker schedules the maintenance job', async () => {
  const schedules = await stack.runtime.boss.getSchedules();
  const mine = schedules.find((s) => s.name === QUEUES.maintenance);
  assert.ok(mine, JSON.stringify(schedules));
  assert.equal(mine.cron, '*/15 * * * *');
});

test('a maintenance job sent to the queue is run by the worker', async () => {
  const old = await delivery(30);
  await stack.runtime.boss.send(QUEUES.maintenance, {});
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && (await sql`select 1 from docpipe.webhook_deliveries where event_id = ${old}`).length > 0) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal((await sql`select 1 from docpipe.webhook_deliveries where event_id = ${old}`).length, 0);
});

test('a second process starting pg-boss on the same database (a restart, another region) succeeds', async () => {
  const again = await startBoss({ url: stack.db.url, settings: stack.config.queue, logger: createLogger('silent'), instanceName: 'second' });
  try {
    const queue = await again.getQueue(QUEUES.maintenance);
    assert.equal(queue?.policy, 'singleton');
  } finally {
    await again.stop({ graceful: false, close: true });
  }
});
