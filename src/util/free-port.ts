// A free TCP port on loopback, for tests, benchmarks and the local fakes (port 0 cannot be used
// where a URL must be known before the server starts, e.g. a signed upload URL's base).
import { createServer } from 'node:net';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
