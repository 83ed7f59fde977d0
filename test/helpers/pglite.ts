// A PostgreSQL with pgvector for tests. The embedded PostgreSQL has no pgvector and this machine
// cannot build it; PGlite (PostgreSQL 18 in WebAssembly) ships it. PGLiteSocketServer serves it
// over the wire protocol, so docpipe's own postgres.js code (the migration runner, the pipeline,
// the search) runs against it unchanged. PGlite is a single session: the pool has one connection.
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { after } from 'node:test';
import { createSql, type Sql } from '../../src/db/client.ts';

export interface VectorPostgres {
  url: string;
  sql: Sql;
  close(): Promise<void>;
}

/** `supabaseSchemas`: an `extensions` schema beforehand, as Supabase has, where pgvector must go. */
export async function startVectorPostgres(options: { supabaseSchemas?: boolean } = {}): Promise<VectorPostgres> {
  const db = await PGlite.create({ extensions: { vector } });
  if (options.supabaseSchemas) await db.exec('create schema extensions');
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0 });
  await server.start();
  const url = `postgres://postgres@${server.getServerConn()}/postgres`;
  const sql = createSql(url, { max: 1 });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await sql.end({ timeout: 5 });
    await server.stop();
    await db.close();
  };
  after(close);
  return { url, sql, close };
}
