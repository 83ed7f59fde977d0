// Where Postgres backends spend a phase: pg_stat_activity sampled every few milliseconds on a
// dedicated connection. Each sample counts the client backends of the benchmark database by
// what they are doing: running (CPU), waiting on something (wait_event_type:wait_event), or
// "idle in transaction" (a transaction is open and the backend waits for the next statement
// from Node: round trips held inside transactions). Averages are "backends in that state".
import { createSql, type Sql } from '../../src/db/client.ts';

const APP = 'bench-wait-sampler';

export interface WaitProfile {
  samples: number;
  /** state -> average number of backends in it. */
  states: Record<string, number>;
}

export class WaitSampler {
  private readonly sql: Sql;
  private running = false;
  private loop: Promise<void> | null = null;
  private counts = new Map<string, number>();
  private samples = 0;

  constructor(url: string, private readonly intervalMs = 10) {
    this.sql = createSql(url, { max: 1, applicationName: APP });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.counts = new Map();
    this.samples = 0;
    this.loop = (async () => {
      while (this.running) {
        try {
          const rows = await this.sql<{ state: string; n: number }[]>`
            select case
                     when state = 'active' and wait_event is null then 'running (CPU)'
                     when state = 'active' then wait_event_type || ':' || wait_event
                     else state
                   end as state,
                   count(*)::int as n
            from pg_stat_activity
            where backend_type = 'client backend' and datname = current_database()
              and application_name <> ${APP} and state <> 'idle'
            group by 1`;
          this.samples++;
          for (const r of rows) this.counts.set(r.state, (this.counts.get(r.state) ?? 0) + r.n);
        } catch {
          // A failed sample is skipped; the profile is a diagnostic, not a result.
        }
        await new Promise((r) => setTimeout(r, this.intervalMs));
      }
    })();
  }

  async stop(): Promise<WaitProfile> {
    this.running = false;
    await this.loop;
    const states: Record<string, number> = {};
    for (const [state, n] of [...this.counts].sort((a, b) => b[1] - a[1])) states[state] = this.samples ? n / this.samples : 0;
    return { samples: this.samples, states };
  }

  async close(): Promise<void> {
    this.running = false;
    await this.loop;
    await this.sql.end({ timeout: 5 });
  }
}

/** "2.1 idle in transaction, 1.3 IO:WALSync, ..." (top `n` states). */
export function describeWaits(profile: WaitProfile | undefined, n = 4): string {
  if (!profile || profile.samples === 0) return '-';
  const parts = Object.entries(profile.states)
    .slice(0, n)
    .map(([state, avg]) => `${avg.toFixed(1)} ${state}`);
  return parts.length ? parts.join(', ') : 'none busy';
}
