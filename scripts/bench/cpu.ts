// CPU accounting per benchmark phase, from /proc: the harness process (docpipe's API and
// worker, and the baselines), its other children (the in-process worker's sandbox processes),
// service processes started on their own (the webhook, worker processes, the delay proxy), the
// embedded Postgres (postmaster and all its backends) and the load-generator child (which
// reports its own process.cpuUsage()). On a 2-core machine these
// share the cores, so "cores busy" tells where the time went. Two more columns keep the figures
// honest: "kernel" (machine busy time no process is charged with: softirq work of loopback TCP,
// I/O completion, ...) and "foreign" (processes outside this run, e.g. someone's test suite).
import { readdirSync, readFileSync } from 'node:fs';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux
const KTHREADD = 2;

interface ProcStat {
  ppid: number;
  /** utime + stime of the process, plus cutime + cstime of its reaped children. */
  ticks: number;
}

function readProcs(): Map<number, ProcStat> {
  const stats = new Map<number, ProcStat>();
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return stats;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const raw = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const rest = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
      // rest[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
      stats.set(Number(entry), { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]) });
    } catch {
      /* the process exited meanwhile */
    }
  }
  return stats;
}

function tree(stats: Map<number, ProcStat>, root: number): Set<number> {
  const children = new Map<number, number[]>();
  for (const [pid, stat] of stats) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), pid]);
  const out = new Set<number>();
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    if (out.has(pid)) continue;
    out.add(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** CPU seconds the whole machine has been busy (all cores; /proc/stat minus idle and iowait). */
function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}

export interface CpuSnapshot {
  at: number;
  /** This process alone (process.cpuUsage). */
  self: number;
  /** This process's other live descendants: not Postgres, services or clients (the sandbox children). */
  helpers: number;
  /** The service processes named to cpuSnapshot, with their descendants. */
  services: number;
  /** The postmaster and its backends, including reaped ones. */
  postgres: number;
  /** This process and every descendant (Postgres, load children), including reaped ones. */
  ours: number;
  /** User processes outside this run. */
  foreign: number;
  machine: number;
  elu: EventLoopUtilization;
}

/**
 * `services`: processes started as services (their trees count apart); `clients`: load children
 * (they report their own CPU). Both are left out of `helpers`.
 */
export function cpuSnapshot(postmasterPid: number | null, groups: { services?: Iterable<number>; clients?: Iterable<number> } = {}): CpuSnapshot {
  const stats = readProcs();
  const sum = (pids: Iterable<number>) => {
    let ticks = 0;
    for (const pid of pids) ticks += stats.get(pid)?.ticks ?? 0;
    return ticks / TICKS_PER_SECOND;
  };
  const ours = tree(stats, process.pid);
  const kernel = tree(stats, KTHREADD);
  const foreign = [...stats.keys()].filter((pid) => !ours.has(pid) && !kernel.has(pid));
  const postgres = postmasterPid && stats.has(postmasterPid) ? tree(stats, postmasterPid) : new Set<number>();
  const services = new Set<number>();
  for (const pid of groups.services ?? []) for (const p of tree(stats, pid)) services.add(p);
  const apart = new Set<number>([process.pid, ...postgres, ...services]);
  for (const pid of groups.clients ?? []) for (const p of tree(stats, pid)) apart.add(p);
  const self = process.cpuUsage();
  return {
    at: performance.now(),
    self: (self.user + self.system) / 1e6,
    helpers: sum([...ours].filter((pid) => !apart.has(pid))),
    services: sum(services),
    postgres: postmasterPid && stats.has(postmasterPid) ? sum(postgres) : Number.NaN,
    ours: sum(ours),
    foreign: sum(foreign),
    machine: machineBusySeconds(),
    elu: performance.eventLoopUtilization(),
  };
}

export interface PhaseCpu {
  seconds: number;
  /** Average cores busy during the phase. */
  server: number;
  /** Event-loop utilisation of the server's main thread (1 = never idle). */
  serverLoop: number;
  /** The harness's other children: the in-process worker's sandbox processes. */
  helpers: number;
  /** Service processes of their own (webhook, worker processes, delay proxy). */
  services: number;
  postgres: number;
  client: number | null;
  /** Machine busy time charged to no process (mostly softirq: loopback TCP, block I/O completion). */
  kernel: number;
  /** Processes outside this run: noise. */
  foreign: number;
}

export function phaseCpu(start: CpuSnapshot, end: CpuSnapshot, clientCpuSeconds: number | null): PhaseCpu {
  const seconds = (end.at - start.at) / 1000;
  const perCore = (a: number, b: number) => (b - a) / seconds;
  return {
    seconds,
    server: perCore(start.self, end.self),
    serverLoop: performance.eventLoopUtilization(end.elu, start.elu).utilization,
    helpers: Math.max(0, perCore(start.helpers, end.helpers)),
    services: Math.max(0, perCore(start.services, end.services)),
    postgres: perCore(start.postgres, end.postgres),
    client: clientCpuSeconds === null ? null : clientCpuSeconds / seconds,
    kernel: Math.max(0, perCore(start.machine, end.machine) - perCore(start.ours, end.ours) - perCore(start.foreign, end.foreign)),
    foreign: Math.max(0, perCore(start.foreign, end.foreign)),
  };
}

/** CPU seconds of these processes and their live descendants (reaped ones count in their parent's). */
export function treeCpuSeconds(roots: Iterable<number>): number {
  const stats = readProcs();
  const pids = new Set<number>();
  for (const root of roots) for (const pid of tree(stats, root)) pids.add(pid);
  let ticks = 0;
  for (const pid of pids) ticks += stats.get(pid)?.ticks ?? 0;
  return ticks / TICKS_PER_SECOND;
}
