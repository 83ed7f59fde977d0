// An event and the job it triggers commit together: pg-boss sends through the command's own
// postgres.js transaction, so a rollback takes the job with it and a rejected command queues nothing.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { execute, executeIn, type CommandContext } from '../../src/documents/commands.ts';
import { DomainError, type DocumentCommand } from '../../src/documents/document.ts';
import type { EventMetadata } from '../../src/events/catalog.ts';
import { QUEUES, type JobData } from '../../src/queue/jobs.ts';
import { uploadCommand } from '../helpers/commands.ts';
import { createQueueDatabase } from '../helpers/db.ts';

const { db, boss, ctx } = await createQueueDatabase('test-enqueue');
const { sql } = db;

const upload = (id: string): DocumentCommand => uploadCommand(id);

const metadata = (): EventMetadata => ({ correlationId: randomUUID(), causationId: null, actor: 'user:user-1', requestId: `req-${randomUUID()}` });

interface JobRow {
  id: string;
  name: string;
  state: string;
  data: JobData;
  retry_limit: number;
}

/** Every pg-boss job, of any queue, about this document. */
async function jobsFor(documentId: string): Promise<JobRow[]> {
  return sql<JobRow[]>`
    select id, name, state::text as state, data, retry_limit from pgboss.job
    where data->>'documentId' = ${documentId} order by created_on`;
}

async function counts(documentId: string): Promise<{ events: number; status: number; jobs: number }> {
  const [row] = await sql<{ events: number; status: number }[]>`
    select (select count(*)::int from docpipe.events where stream_id = ${documentId}) as events,
           (select count(*)::int from docpipe.document_status where id = ${documentId}) as status`;
  return { ...row!, jobs: (await jobsFor(documentId)).length };
}

describe('transactional enqueue', () => {
  test('the queues exist with the configured policy', async () => {
    const parse = await boss.getQueue(QUEUES.parse);
    assert.ok(parse, 'docpipe-parse queue');
    assert.equal(parse.retryLimit, 1);
    assert.equal(parse.deadLetter, QUEUES.deadLetter);
    assert.ok(await boss.getQueue(QUEUES.deadLetter));
  });

  test('Upload commits DocumentUploaded and exactly one parse job', async () => {
    const id = randomUUID();
    const meta = metadata();
    const result = await execute(ctx, id, upload(id), meta);
    assert.equal(result.events.length, 1);
    const [event] = result.events;
    assert.equal(event!.type, 'DocumentUploaded');

    assert.deepEqual(await counts(id), { events: 1, status: 1, jobs: 1 });
    const [job] = await jobsFor(id);
    assert.equal(job!.name, QUEUES.parse);
    assert.equal(job!.state, 'created');
    assert.equal(job!.retry_limit, 1, 'the queue policy applies to jobs sent through the transaction');
    assert.deepEqual(job!.data, { documentId: id, run: 1, correlationId: meta.correlationId, causationId: event!.eventId, requestId: meta.requestId });

    // pg-boss itself sees the same job.
    const found = await boss.findJobs<JobData>(QUEUES.parse, { data: { documentId: id } });
    assert.equal(found.length, 1);
    assert.equal(found[0]!.id, job!.id);
    assert.deepEqual(found[0]!.data, job!.data);
  });

  test('a transaction that throws after executeIn rolls back the event, the row and the job', async () => {
    const id = randomUUID();
    const boom = new Error('boom after the command');
    let sawJobInside = 0;
    await assert.rejects(
      sql.begin(async (tx) => {
        const result = await executeIn(tx, ctx, id, upload(id), metadata());
        assert.equal(result.events.length, 1);
        // Inside the transaction the job is there (so the rollback below is what removes it).
        const [row] = await tx<{ n: number }[]>`select count(*)::int as n from pgboss.job where data->>'documentId' = ${id}`;
        sawJobInside = row!.n;
        throw boom;
      }),
      (err) => err === boom,
    );
    assert.equal(sawJobInside, 1, 'the job was written in the command transaction');
    assert.deepEqual(await counts(id), { events: 0, status: 0, jobs: 0 });
    assert.deepEqual(await boss.findJobs(QUEUES.parse, { data: { documentId: id } }), []);

    // The id is still free: the rolled-back upload left nothing behind.
    await execute(ctx, id, upload(id), metadata());
    assert.deepEqual(await counts(id), { events: 1, status: 1, jobs: 1 });
  });

  test('a DomainError (second Upload of the same id) appends and queues nothing', async () => {
    const id = randomUUID();
    await execute(ctx, id, upload(id), metadata());
    const [first] = await jobsFor(id);
    await assert.rejects(execute(ctx, id, upload(id), metadata()), (err) => err instanceof DomainError && err.code === 'DOCUMENT_EXISTS');
    assert.deepEqual(await counts(id), { events: 1, status: 1, jobs: 1 });
    assert.equal((await jobsFor(id))[0]!.id, first!.id);
  });

  test('later commands enqueue their stage jobs in the same way (parse success -> embed, delete -> purge)', async () => {
    const id = randomUUID();
    const meta = metadata();
    await execute(ctx, id, upload(id), meta);
    await execute(ctx, id, { type: 'StartParse', run: 1, parser: 'local' }, meta);
    const parsed = await execute(ctx, id, { type: 'CompleteParse', run: 1, parsedKey: 'k', pages: 1, characters: 1, sha256: 'd'.repeat(64) }, meta);
    await execute(ctx, id, { type: 'Delete', reason: null }, meta);
    const jobs = await jobsFor(id);
    assert.deepEqual(jobs.map((j) => j.name), [QUEUES.parse, QUEUES.embed, QUEUES.purge]);
    assert.equal(jobs[1]!.data.causationId, parsed.events[0]!.eventId);
    assert.equal(jobs[1]!.data.run, 1);
  });
});
