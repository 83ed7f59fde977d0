// The baselines measured beside docpipe in the same run, on the same process and database:
// a bare Fastify hello-world (for GET /v1/documents/:id) and a bare single-row INSERT endpoint
// that takes the same 4 KB multipart upload (for POST /v1/documents).
import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Sql } from '../../src/db/client.ts';

/** A bare Fastify hello-world; `before` registers plugins first (the security headers' cost). */
export async function startHelloWorld(before?: (app: FastifyInstance) => Promise<void>): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify({ logger: false });
  if (before) await before(app);
  app.get('/', async () => ({ hello: 'world' }));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url };
}

export async function createBenchTable(sql: Sql): Promise<void> {
  await sql`
    create table if not exists public.bench_rows (
      id uuid primary key,
      file_name text not null,
      size integer not null,
      body bytea not null,
      created_at timestamptz not null default now()
    )`;
}

/**
 * `POST /rows`: reads the multipart file into memory and inserts it as one row (autocommit:
 * one statement, one commit). No auth, no storage, no hashing: the floor under an upload.
 */
export async function startInsertBaseline(sql: Sql): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify({ logger: false });
  await app.register(multipart, { limits: { fileSize: 1024 * 1024 } });
  app.post('/rows', async (request, reply) => {
    const part = await request.file();
    if (!part) return reply.status(400).send({ error: 'no file' });
    const body = await part.toBuffer();
    const id = randomUUID();
    await sql`insert into public.bench_rows (id, file_name, size, body) values (${id}, ${part.filename}, ${body.length}, ${body})`;
    return reply.status(201).send({ id });
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url };
}
