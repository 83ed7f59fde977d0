// Distance on loopback: a TCP proxy that delays every chunk by a fixed one-way delay in each
// direction, for the bench's far-worker phase (a worker whose database is 40 ms away). The
// kernel here has no netem, so this is the only way to add latency between two local processes.
//
// Each direction is a lane: a chunk read at time t is written at max(t + delay, the previous
// chunk's time), so order holds within a direction and a burst is not serialised behind its own
// delays (its chunks leave together, `delay` later). The connection's set-up (TCP handshake,
// one more round trip on a real network) is not delayed: the pools connect once.
//
// Counters, per connection and in total: bytes each way, and round trips: client -> server sends
// that follow data the client has received from the server (a turn; the first send counts too).
// Pipelined sends with no answer between them count once, as they cost one round trip.
import net from 'node:net';

export interface ProxyCounters {
  bytesToServer: number;
  bytesToClient: number;
  roundTrips: number;
}

export interface ConnectionCounters extends ProxyCounters {
  id: number;
  open: boolean;
}

export interface DelayProxyStats extends ProxyCounters {
  /** Connections accepted so far, and still open. */
  connections: number;
  /** The most bytes one lane held at once (queued plus its destination's write buffer). */
  peakBufferedBytes: number;
  open: number;
  perConnection: ConnectionCounters[];
}

export interface DelayProxy {
  host: string;
  port: number;
  delayMs(): number;
  /** Chunks read from now on get the new delay (order still holds: a chunk never overtakes the one before). */
  setDelay(ms: number): void;
  /** The same URL with the proxy's host and port in place of the server's (postgres://...). */
  url(targetUrl: string): string;
  stats(): DelayProxyStats;
  stop(): Promise<void>;
}

export interface DelayProxyOptions {
  targetHost: string;
  targetPort: number;
  delayMs: number;
  host?: string;
  port?: number;
  /**
   * Bytes a lane may hold (queued plus the destination's write buffer) before it stops reading its
   * source; it reads again below half. A real link holds a window's worth in flight, not more.
   */
  highWaterBytes?: number;
}

const now = () => performance.now();

/** One direction of one connection. */
class Lane {
  private readonly queue: { at: number; chunk: Buffer | 'end' | 'close' }[] = [];
  private last = 0;
  private timer: NodeJS.Timeout | null = null;
  private queued = 0;
  private paused = false;
  peak = 0;

  constructor(
    private readonly from: net.Socket,
    private readonly to: net.Socket,
    private readonly delay: () => number,
    private readonly highWater: number,
    private readonly onDeliver: () => void,
  ) {
    to.on('drain', () => this.maybeResume());
  }

  push(chunk: Buffer | 'end' | 'close'): void {
    const at = Math.max(now() + this.delay(), this.last);
    this.last = at;
    this.queue.push({ at, chunk });
    if (Buffer.isBuffer(chunk)) {
      this.queued += chunk.length;
      this.peak = Math.max(this.peak, this.queued + this.to.writableLength);
      if (!this.paused && this.queued + this.to.writableLength > this.highWater) {
        this.paused = true;
        this.from.pause();
      }
    }
    this.arm();
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue.length = 0;
    this.queued = 0;
  }

  private arm(): void {
    if (this.timer || this.queue.length === 0) return;
    const wait = this.queue[0]!.at - now();
    if (wait <= 0) this.flush();
    else this.timer = setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    this.timer = null;
    while (this.queue.length && this.queue[0]!.at <= now()) {
      const { chunk } = this.queue.shift()!;
      if (this.to.destroyed) continue;
      if (chunk === 'end') this.to.end();
      else if (chunk === 'close') this.to.end(() => this.to.destroy());
      else {
        this.queued -= chunk.length;
        this.onDeliver();
        this.to.write(chunk);
        this.peak = Math.max(this.peak, this.queued + this.to.writableLength);
      }
    }
    this.maybeResume();
    this.arm();
  }

  private maybeResume(): void {
    if (this.paused && this.queued + this.to.writableLength <= this.highWater / 2) {
      this.paused = false;
      this.from.resume();
    }
  }
}

export async function startDelayProxy(options: DelayProxyOptions): Promise<DelayProxy> {
  let delay = checkDelay(options.delayMs);
  const highWater = options.highWaterBytes ?? 8 * 1024 * 1024;
  const connections: (ConnectionCounters & { client: net.Socket; server: net.Socket; lanes: Lane[] })[] = [];

  const proxy = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const server = net.connect({ host: options.targetHost, port: options.targetPort, allowHalfOpen: true, noDelay: true });
    const conn = { id: connections.length + 1, open: true, bytesToServer: 0, bytesToClient: 0, roundTrips: 0, client, server, lanes: [] as Lane[] };
    connections.push(conn);
    // True when the client has received server data since its last send (or has sent nothing yet).
    let turn = true;
    const up = new Lane(client, server, () => delay, highWater, () => {});
    const down = new Lane(server, client, () => delay, highWater, () => (turn = true));
    conn.lanes = [up, down];
    client.on('data', (chunk: Buffer) => {
      conn.bytesToServer += chunk.length;
      if (turn) {
        conn.roundTrips++;
        turn = false;
      }
      up.push(chunk);
    });
    server.on('data', (chunk: Buffer) => {
      conn.bytesToClient += chunk.length;
      down.push(chunk);
    });
    // A FIN travels like data: after what was sent before it. A socket gone (closed, reset,
    // refused) takes its peer with it once what was already on the way has arrived.
    client.on('end', () => up.push('end'));
    server.on('end', () => down.push('end'));
    client.on('close', () => {
      conn.open = false;
      down.clear();
      up.push('close');
    });
    server.on('close', () => {
      conn.open = false;
      up.clear();
      down.push('close');
    });
    // 'close' follows every error; without a listener an error would be thrown.
    client.on('error', () => {});
    server.on('error', () => {});
  });
  proxy.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    proxy.once('error', reject);
    proxy.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      proxy.off('error', reject);
      resolve();
    });
  });
  const address = proxy.address() as net.AddressInfo;

  return {
    host: address.address,
    port: address.port,
    delayMs: () => delay,
    setDelay(ms: number) {
      delay = checkDelay(ms);
    },
    url(targetUrl: string) {
      const url = new URL(targetUrl);
      url.hostname = address.address;
      url.port = String(address.port);
      return url.toString();
    },
    stats() {
      const perConnection = connections.map(({ id, open, bytesToServer, bytesToClient, roundTrips }) => ({ id, open, bytesToServer, bytesToClient, roundTrips }));
      const sum = (k: keyof ProxyCounters) => perConnection.reduce((s, c) => s + c[k], 0);
      return {
        connections: perConnection.length,
        peakBufferedBytes: Math.max(0, ...connections.flatMap((c) => c.lanes.map((l) => l.peak))),
        open: perConnection.filter((c) => c.open).length,
        bytesToServer: sum('bytesToServer'),
        bytesToClient: sum('bytesToClient'),
        roundTrips: sum('roundTrips'),
        perConnection,
      };
    },
    async stop() {
      const closed = new Promise<void>((resolve) => proxy.close(() => resolve()));
      for (const c of connections) {
        for (const lane of c.lanes) lane.clear();
        c.client.destroy();
        c.server.destroy();
      }
      await closed;
    },
  };
}

function checkDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0 || ms > 60_000) throw new Error(`delay must be 0..60000 ms, got ${ms}`);
  return ms;
}
