// A fake LlamaCloud per test: every fake the returned function starts is closed after the test
// that started it, whether it passed or failed.
import { afterEach } from 'node:test';
import { startFakeLlamaParse, type FakeLlamaParse, type FakeLlamaParseOptions } from '../fakes/llamaparse.ts';

export function fakeLlamaParsePerTest(): (options?: FakeLlamaParseOptions) => Promise<FakeLlamaParse> {
  const open: FakeLlamaParse[] = [];
  afterEach(async () => {
    while (open.length > 0) await open.pop()!.close();
  });
  return async (options = {}) => {
    const fake = await startFakeLlamaParse(options);
    open.push(fake);
    return fake;
  };
}
