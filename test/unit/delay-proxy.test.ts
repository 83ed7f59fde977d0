// The bench's delay proxy (scripts/bench/delay-proxy.ts) on real sockets: the added latency,
// order within a direction, the round-trip and byte counters, back-pressure, closing, and
// postgres.js talking to the embedded Postgres through it.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { startDelayProxy, type DelayProxy } from '../../scripts/bench/delay-proxy.ts';
import { createDatabase } from '../helpers/db.ts';

/** A server on 127.0.0.1 that runs `onSocket` for each connection. */
async function server(onSocket: (socket: net.Socket) => void): Promise<{ port: number; sockets: net.Socket[]; close(): Promise<void> }> {
  const sockets: net.Socket[] = [];
  const srv = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    onSocket(socket);
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  after(() => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), srv.close(() => resolve()))));
  return {
    port: (srv.address() as net.AddressInfo).port,
    sockets,
    close: () => new Promise<void>((resolve) => srv.close(() => resolve())),
  };
}

async function proxyTo(port: number, delayMs: number, highWaterBytes?: number): Promise<DelayProxy> {
  const proxy = await startDelayProxy({ targetHost: '127.0.0.1', targetPort: port, delayMs, ...(highWaterBytes ? { highWaterBytes } : {}) });
  after(() => proxy.stop());
  return proxy;
}

async function connect(port: number, allowHalfOpen = true): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen });
  await once(socket, 'connect');
  socket.on('error', () => {});
  after(() => socket.destroy());
  return socket;
}

/** Resolves with the next chunk the socket reads (bounded). */
function nextData(socket: net.Socket, timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no data within the timeout')), timeoutMs);
    socket.once('data', (d: Buffer) => {
      clearTimeout(timer);
      resolve(d);
    });
  });
}

/** Resolves when `socket` has read `bytes` bytes in all (bounded), with them. */
function readBytes(socket: net.Socket, bytes: number, timeoutMs = 20_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`read ${got} of ${bytes} bytes within the timeout`)), timeoutMs);
    const onData = (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= bytes) {
        clearTimeout(timer);
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
  });
}

const echo = (socket: net.Socket) => {
  socket.on('data', (d) => socket.write(d));
  socket.on('end', () => socket.end());
};

test('a request and its answer take two one-way delays, not more (D = 40 ms)', async () => {
  const target = await server(echo);
  const proxy = await proxyTo(target.port, 40);
  const client = await connect(proxy.port);
  // The first exchange also waits for the proxy's own connection to the server: measure the second.
  client.write('warm');
  await nextData(client);
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    client.write(`ping ${i}`);
    assert.equal((await nextData(client)).toString(), `ping ${i}`);
    times.push(performance.now() - t);
  }
  for (const ms of times) {
    assert.ok(ms >= 80, `round trip took ${ms.toFixed(1)} ms, less than 2 x 40 ms`);
    // Slack for timer granularity and a busy shared machine; a proxy that serialised or doubled
    // the delays would take 160 ms or more.
    assert.ok(ms < 80 + 60, `round trip took ${ms.toFixed(1)} ms`);
  }
});

test('N sequential ping-pongs count N round trips; the bytes are counted exactly', async () => {
  const target = await server(echo);
  const proxy = await proxyTo(target.port, 2);
  const client = await connect(proxy.port);
  const N = 7;
  let sent = 0;
  for (let i = 0; i < N; i++) {
    const message = `message number ${i}`;
    client.write(message);
    sent += message.length;
    assert.equal((await readBytes(client, message.length)).toString(), message);
  }
  const stats = proxy.stats();
  assert.equal(stats.roundTrips, N);
  assert.equal(stats.bytesToServer, sent);
  assert.equal(stats.bytesToClient, sent);
  assert.equal(stats.connections, 1);
  assert.deepEqual(
    stats.perConnection.map(({ roundTrips, bytesToServer, bytesToClient }) => ({ roundTrips, bytesToServer, bytesToClient })),
    [{ roundTrips: N, bytesToServer: sent, bytesToClient: sent }],
  );
});

test('pipelined sends with no answer between them count as one round trip', async () => {
  let received = '';
  const target = await server((socket) => socket.on('data', (d) => (received += d.toString())));
  const proxy = await proxyTo(target.port, 5);
  const client = await connect(proxy.port);
  for (const part of ['one ', 'two ', 'three']) {
    client.write(part);
    await sleep(3);
  }
  const deadline = Date.now() + 5_000;
  while (received.length < 13 && Date.now() < deadline) await sleep(5);
  assert.equal(received, 'one two three');
  assert.equal(proxy.stats().roundTrips, 1);
  assert.equal(proxy.stats().bytesToServer, 13);
});

test('a smaller delay never lets a chunk overtake the one before it', async () => {
  let received = '';
  const target = await server((socket) => socket.on('data', (d) => (received += d.toString())));
  const proxy = await proxyTo(target.port, 60);
  const client = await connect(proxy.port);
  client.write('first,');
  await sleep(5);
  proxy.setDelay(0);
  client.write('second');
  const deadline = Date.now() + 5_000;
  while (received.length < 12 && Date.now() < deadline) await sleep(5);
  assert.equal(received, 'first,second');
});

test('bulk data arrives whole and in order through a small window (back-pressure)', async () => {
  const bytes = 8 * 1024 * 1024;
  const payload = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) payload.writeUInt32LE(i, i);
  let serverSocket!: net.Socket;
  const target = await server((socket) => {
    serverSocket = socket;
    // The server reads slowly at first: the proxy must stop reading the client, not buffer it all.
    socket.pause();
    setTimeout(() => socket.resume(), 300);
  });
  const proxy = await proxyTo(target.port, 1, 64 * 1024);
  const client = await connect(proxy.port);
  const written = new Promise<void>((resolve) => client.write(payload, () => resolve()));
  const deadline = Date.now() + 5_000;
  while (!serverSocket && Date.now() < deadline) await sleep(5);
  const got = await readBytes(serverSocket, bytes);
  await written;
  assert.equal(got.length, bytes);
  assert.ok(got.equals(payload), 'the bytes arrived in order and intact');
  assert.equal(proxy.stats().bytesToServer, bytes);
  // Held to the window (plus the chunks read before a pause takes effect), not the 8 MB sent.
  assert.ok(proxy.stats().peakBufferedBytes <= 64 * 1024 * 4, `the proxy held ${proxy.stats().peakBufferedBytes} bytes at once`);
});

test('closing the client closes the server side, and the reverse', async () => {
  const ended: string[] = [];
  const target = await server((socket) => {
    socket.resume();
    socket.on('end', () => {
      ended.push('server saw end');
      socket.end();
    });
  });
  const proxy = await proxyTo(target.port, 5);
  const client = await connect(proxy.port);
  client.resume();
  client.write('x');
  await sleep(20);
  client.end();
  await Promise.race([once(client, 'close'), sleep(5_000).then(() => assert.fail('the client was not closed'))]);
  assert.deepEqual(ended, ['server saw end']);
  assert.equal(proxy.stats().open, 0);

  // Now the server goes away: a client that closes on end of stream (as database drivers do) is
  // not left hanging, and neither is the proxy's side.
  const other = await connect(proxy.port, false);
  other.resume();
  other.write('y');
  const deadline = Date.now() + 5_000;
  while (target.sockets.length < 2 && Date.now() < deadline) await sleep(5);
  target.sockets[1]!.destroy();
  await Promise.race([once(other, 'close'), sleep(5_000).then(() => assert.fail('the client was not closed after the server went away'))]);
  const settled = Date.now() + 5_000;
  while (proxy.stats().open > 0 && Date.now() < settled) await sleep(5);
  assert.equal(proxy.stats().open, 0);
});

test('postgres.js through the proxy: N sequential queries cost N round trips, 2 x D each', async () => {
  const db = await createDatabase({ migrate: false });
  const url = new URL(db.url);
  const D = 15;
  const proxy = await proxyTo(Number(url.port), D);
  const sql = postgres(proxy.url(db.url), { max: 1, onnotice: () => {} });
  after(() => sql.end({ timeout: 1 }));
  await sql`select 1`; // connects (start-up, authentication) outside the measured part
  const before = proxy.stats().roundTrips;
  const N = 10;
  const t = performance.now();
  for (let i = 0; i < N; i++) assert.equal((await sql`select ${i}::int as n`)[0]!.n, i);
  const elapsed = performance.now() - t;
  const roundTrips = proxy.stats().roundTrips - before;
  assert.ok(roundTrips >= N, `${roundTrips} round trips for ${N} queries`);
  assert.ok(elapsed >= N * 2 * D, `${N} queries took ${elapsed.toFixed(0)} ms, less than ${N} x 2 x ${D} ms`);
  assert.equal(proxy.stats().connections, 1);
});
