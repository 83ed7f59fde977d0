import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { startStack, upload, waitForStatus } from '../helpers/stack.ts';

test('a text file goes from upload to ready', async () => {
  const stack = await startStack();
  const res = await upload(stack, await readFile('test/fixtures/sample.txt'), 'sample.txt');
  assert.equal(res.status, 202);
  const { id } = (await res.json()) as { id: string };
  const doc = await waitForStatus(stack, id, ['ready', 'failed']);
  assert.equal(doc.status, 'ready');
  assert.ok(doc.chunkCount > 0);
});
