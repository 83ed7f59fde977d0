// One embedded PostgreSQL cluster per `npm test` run, in a throwaway directory. Each test file
// creates its own database on it (test/helpers/db.ts), so files run in parallel in isolation.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres, type EmbeddedPg } from '../src/db/embedded.ts';
import { freePort } from '../src/util/free-port.ts';

let cluster: EmbeddedPg | undefined;
let dir: string | undefined;


export async function globalSetup(): Promise<void> {
  if (process.env.DOCPIPE_TEST_ADMIN_URL) return; // an outer runner already started one
  dir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-test-'));
  cluster = await startEmbeddedPostgres({
    dataDir: dir,
    port: await freePort(),
    database: 'postgres',
    // Removed at teardown wherever it lives (as root it may live outside `dir`).
    throwaway: true,
    // Throwaway data: durability costs time and buys nothing here.
    postgresFlags: ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'],
  });
  process.env.DOCPIPE_TEST_ADMIN_URL = cluster.urlFor('postgres');
}

export async function globalTeardown(): Promise<void> {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}
