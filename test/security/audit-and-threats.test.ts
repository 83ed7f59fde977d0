// The audit log and threat detection over real HTTP and the real database: what is recorded (and
// aggregated), that the log is append-only with retention the only deletion, and the rules that
// act: an address blocked after repeated authentication failures (audited, expiring), a user
// flagged for probing other owners' document ids, an address flagged for forged webhooks.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pruneAudit, queryAudit } from '../../src/security/audit.ts';
import { registry } from '../../src/observability/metrics.ts';
import { WEBHOOK_TOKEN_HEADER, webhookCredential } from '../../src/security/webhook-auth.ts';
import { runToExit } from '../helpers/process.ts';
import { startStack, TEST_WEBHOOK_SECRET } from '../helpers/stack.ts';

const stack = await startStack({
  worker: false,
  webhooks: true,
  env: { TRUST_PROXY: 'fly', AUTH_BLOCK_AFTER: '10', AUTH_BLOCK_SECONDS: '2', FOREIGN_ID_FLAG_AFTER: '5', FORGED_WEBHOOK_FLAG_AFTER: '5', WEBHOOK_FAILURES_PER_ADDRESS: '8' },
});
after(() => stack.close());
const { sql } = stack.runtime;
const from = (ip: string, token?: string) => ({ 'fly-client-ip': ip, ...(token ? { authorization: `Bearer ${token}` } : {}) });
const securityEvents = async (kind: string) => ((await registry.getSingleMetric('docpipe_security_events_total')?.get())?.values.find((v) => v.labels.kind === kind)?.value ?? 0);
async function upload(sub: string): Promise<string> {
  const form = new FormData();
  form.append('file', new Blob(['audit me']), 'a.txt');
  const res = await fetch(`${stack.apiUrl}/v1/documents`, { method: 'POST', headers: from('192.0.2.1', stack.token(sub)), body: form });
  assert.equal(res.status, 202);
  return ((await res.json()) as { id: string }).id;
}

describe('the log is append-only', () => {
  test('update, delete and truncate are refused; the time is the database\'s', async () => {
    await sql`insert into docpipe.audit_log (actor, action, outcome, at) values ('user:t', 'test.append', 'success', '2001-01-01')`;
    const [row] = await sql<{ id: string; at: Date }[]>`select id::text, at from docpipe.audit_log where action = 'test.append'`;
    assert.ok(Date.now() - row!.at.getTime() < 60_000, 'a backdated insert gets now()');
    await assert.rejects(sql`update docpipe.audit_log set outcome = 'denied' where id = ${row!.id}`, /append-only/);
    await assert.rejects(sql`delete from docpipe.audit_log where id = ${row!.id}`, /append-only/);
    await assert.rejects(sql`truncate docpipe.audit_log`, /append-only/);
  });

  test('retention removes only rows older than the cutoff', async () => {
    // A row from 100 days ago: only a superuser with the trigger off can write one (as a restore would).
    await sql.begin(async (tx) => {
      await tx`alter table docpipe.audit_log disable trigger audit_log_guard`;
      await tx`insert into docpipe.audit_log (actor, action, outcome, at) values ('user:old', 'test.old', 'success', now() - interval '100 days')`;
      await tx`alter table docpipe.audit_log enable trigger audit_log_guard`;
    });
    const removed = await pruneAudit(sql, 90);
    assert.equal(removed, 1);
    assert.equal((await queryAudit(sql, { action: 'test.old' })).length, 0);
    assert.equal((await queryAudit(sql, { action: 'test.append' })).length, 1, 'recent rows stay');
  });
});

describe('what is recorded', () => {
  test('denied authentication: one aggregated row per address and minute, with its count', async () => {
    for (let i = 0; i < 7; i++) await (await fetch(`${stack.apiUrl}/v1/documents`, { headers: from('198.51.100.20', 'bad.token.value') })).body?.cancel();
    await stack.flushAudit();
    const rows = await queryAudit(sql, { actor: 'address:198.51.100.20', action: 'auth.denied' });
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.occurrences, 7);
    assert.equal(rows[0]!.outcome, 'denied');
    assert.equal(rows[0]!.client_address, '198.51.100.20');
  });

  test('deletes, reprocess and every service-role request: one row each, with the request id and address', async () => {
    const id = await upload('user-del');
    // Reprocess of a document still in `uploaded` (no worker here) is refused (409), and recorded.
    const again = await fetch(`${stack.apiUrl}/v1/documents/${id}/reprocess`, { method: 'POST', headers: { ...from('192.0.2.9', stack.token('user-del')), 'content-type': 'application/json' }, body: '{}' });
    assert.equal(again.status, 409);
    const del = await fetch(`${stack.apiUrl}/v1/documents/${id}`, { method: 'DELETE', headers: { ...from('192.0.2.9', stack.token('user-del')), 'x-request-id': 'req-delete-1' } });
    assert.ok(del.status < 300, String(del.status));
    await fetch(`${stack.apiUrl}/v1/documents?limit=1`, { headers: from('192.0.2.9', stack.token('backend', { claims: { role: 'service_role' } } as never)) });
    await sleep(200);
    const [deleted] = await queryAudit(sql, { action: 'document.delete', target: id });
    assert.equal(deleted?.actor, 'user:user-del');
    assert.equal(deleted?.outcome, 'success');
    assert.equal(deleted?.request_id, 'req-delete-1');
    assert.equal(deleted?.client_address, '192.0.2.9');
    await stack.flushAudit(); // refusals are aggregated
    const [reprocess] = await queryAudit(sql, { action: 'document.reprocess', target: id });
    assert.equal(reprocess?.outcome, 'failed');
    assert.equal(reprocess?.details.status, 409);
    const service = await queryAudit(sql, { actor: 'user:backend' });
    assert.ok(service.some((r) => r.action === 'service.GET /v1/documents' && r.role === 'service_role'), JSON.stringify(service));
  });
});

describe('rules that act', () => {
  test('repeated authentication failures block the address (403 ADDRESS_BLOCKED, audited), then the block expires', async () => {
    const before = await securityEvents('auth_failures');
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const res = await fetch(`${stack.apiUrl}/v1/documents`, { headers: from('203.0.113.66', `forged.${i}.token`) });
      statuses.push(res.status);
      await res.body?.cancel();
    }
    assert.deepEqual(statuses, [...Array(10).fill(401), 403, 403]);
    const blocked = await fetch(`${stack.apiUrl}/v1/documents`, { headers: from('203.0.113.66', stack.token('user-a')) });
    assert.equal(blocked.status, 403, 'a valid token from a blocked address too');
    assert.equal(((await blocked.json()) as { error: { code: string } }).error.code, 'ADDRESS_BLOCKED');
    assert.ok(Number(blocked.headers.get('retry-after')) >= 1);
    assert.equal((await fetch(`${stack.apiUrl}/v1/documents`, { headers: from('203.0.113.67', stack.token('user-a')) })).status, 200, 'other addresses pass');
    assert.equal(await securityEvents('auth_failures'), before + 1);
    await sleep(200);
    const [row] = await queryAudit(sql, { actor: 'address:203.0.113.66', action: 'block.address' });
    assert.equal(row?.outcome, 'blocked');
    await sleep(2100);
    assert.equal((await fetch(`${stack.apiUrl}/v1/documents`, { headers: from('203.0.113.66', stack.token('user-a')) })).status, 200, 'the block expired');
    await sleep(200);
    assert.equal((await queryAudit(sql, { actor: 'address:203.0.113.66', action: 'block.expired' })).length, 1);
  });

  test('a user probing other owners\' documents gets 404s, each audited, and is flagged at the threshold', async () => {
    const before = await securityEvents('foreign_ids');
    const theirs = [];
    for (let i = 0; i < 5; i++) theirs.push(await upload(`victim-${i}`));
    for (const id of theirs) {
      const res = await fetch(`${stack.apiUrl}/v1/documents/${id}`, { headers: from('192.0.2.50', stack.token('prober')) });
      assert.equal(res.status, 404, 'indistinguishable from a missing document');
      await res.body?.cancel();
    }
    // Unknown ids are not "foreign": nothing to audit.
    await (await fetch(`${stack.apiUrl}/v1/documents/${randomUUID()}`, { headers: from('192.0.2.50', stack.token('prober')) })).body?.cancel();
    await sleep(200);
    await stack.flushAudit();
    const foreign = await queryAudit(sql, { actor: 'user:prober', action: 'document.foreign_access' });
    assert.equal(foreign.length, 1, 'aggregated: probing cannot write a row per request');
    assert.equal(foreign[0]!.occurrences, 5);
    assert.equal((await queryAudit(sql, { actor: 'user:prober', action: 'flag.foreign_ids' })).length, 1);
    assert.equal(await securityEvents('foreign_ids'), before + 1);
  });

  test('a burst of forged webhooks from one address is flagged, then refused unread; authenticated deliveries never count', async () => {
    const before = await securityEvents('forged_webhooks');
    const deliver = (ip: string, documentId: string, token: string) =>
      fetch(`${stack.webhookUrl}/v1/webhooks/llamaparse/${documentId}`, { method: 'POST', headers: { 'content-type': 'application/json', 'fly-client-ip': ip, [WEBHOOK_TOKEN_HEADER]: token }, body: '{}' });
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await deliver('198.51.100.99', randomUUID(), 'forged');
      statuses.push(res.status);
      await res.body?.cancel();
    }
    assert.deepEqual(statuses, [...Array(8).fill(401), 429, 429]);
    await sleep(200);
    assert.equal(await securityEvents('forged_webhooks'), before + 1);
    assert.equal((await queryAudit(sql, { action: 'flag.forged_webhooks' })).length, 1);
    // LlamaCloud's address: its deliveries carry valid credentials, so retries are never limited
    // (an unknown job or document is answered, not refused for the address).
    for (let i = 0; i < 20; i++) {
      const id = randomUUID();
      const res = await deliver('192.0.2.200', id, webhookCredential(TEST_WEBHOOK_SECRET, 'llamaparse', id, 1));
      assert.notEqual(res.status, 429);
      assert.notEqual(res.status, 401);
      await res.body?.cancel();
    }
  });
});

describe('reading the log', () => {
  const service = () => from('192.0.2.77', stack.token('ops', { claims: { role: 'service_role' } } as never));

  test('GET /v1/admin/audit: the service role reads it, filtered and paged; users get 403 ADMIN_ONLY', async () => {
    for (let i = 0; i < 3; i++) await sql`insert into docpipe.audit_log (actor, action, outcome, target) values ('user:pager', 'test.page', 'success', ${`t-${i}`})`;
    const first = await fetch(`${stack.apiUrl}/v1/admin/audit?action=test.page&limit=2`, { headers: service() });
    assert.equal(first.status, 200);
    const page = (await first.json()) as { entries: { target: string; actor: string; at: string }[]; nextBefore: string | null };
    assert.deepEqual(page.entries.map((e) => e.target), ['t-2', 't-1'], 'newest first');
    assert.ok(page.nextBefore);
    const second = (await (await fetch(`${stack.apiUrl}/v1/admin/audit?action=test.page&limit=2&before=${page.nextBefore}`, { headers: service() })).json()) as typeof page;
    assert.deepEqual(second.entries.map((e) => e.target), ['t-0']);
    assert.equal(second.nextBefore, null);
    const user = await fetch(`${stack.apiUrl}/v1/admin/audit`, { headers: from('192.0.2.77', stack.token('user-a')) });
    assert.equal(user.status, 403);
    assert.equal(((await user.json()) as { error: { code: string } }).error.code, 'ADMIN_ONLY');
    for (const bad of ['limit=0', 'since=yesterday', 'outcome=maybe', 'before=abc', 'unknown=1']) {
      const res = await fetch(`${stack.apiUrl}/v1/admin/audit?${bad}`, { headers: service() });
      assert.equal(res.status, 400, bad);
    }
  });

  test('docpipe audit: the CLI prints the same rows, as lines or JSON; bad flags exit 2', async () => {
    const env = { PATH: process.env.PATH, DATABASE_URL: stack.db.url, JWT_SECRET: stack.jwt.secret!, LOG_LEVEL: 'silent', DOCPIPE_DATA_DIR: stack.env.DOCPIPE_DATA_DIR! };
    const cli = (...args: string[]) => runToExit(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'audit', ...args], { env, timeoutMs: 60_000 });
    const json = await cli('--action', 'test.page', '--since', '1h', '--json');
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(json.stdout.trim().split('\n').map((l) => JSON.parse(l).target), ['t-2', 't-1', 't-0']);
    const lines = await cli('--actor', 'address:203.0.113.66', '--action', 'block.address');
    assert.equal(lines.code, 0, lines.stderr);
    assert.match(lines.stdout, /blocked\s+block\.address\s+address:203\.0\.113\.66/);
    const bad = await cli('--since', 'whenever');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--since "whenever"/);
  });
});
