// The worker autoscaler's configuration (fly.autoscaler.toml) and the burst recorded for it
// (test/fixtures/queue-depths.json, made by scripts/record-queue-depths.ts), for the tests that
// check the expression (test/unit/autoscaler.test.ts) and the query
// (test/integration/autoscaler-query.test.ts). queueLoad is what the query must compute from
// the gauges; the integration test holds the real query to it on the same recorded points.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { QUEUES } from '../../src/queue/jobs.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const AUTOSCALER_TOML = 'fly.autoscaler.toml';

/** The queues whose jobs need worker machines: a document's stages. */
export const STAGE_QUEUES: readonly string[] = [QUEUES.parse, QUEUES.parseResult, QUEUES.embed];
/** Jobs one machine is sized for: WORKER_CONCURRENCY (4) on parse and on embed, one queued behind each. */
export const JOBS_PER_MACHINE = 16;
/** Each full step the oldest job has waited adds one machine's worth of jobs. */
export const AGE_STEP_SECONDS = 10;
export const MIN_MACHINES = 1;
export const MAX_MACHINES = 3;

export function readToml(file: string): Record<string, any> {
  return parseToml(readFileSync(path.join(ROOT, file), 'utf8')) as Record<string, any>;
}

/** The autoscaler's [env]. */
export function autoscalerEnv(): Record<string, string> {
  return readToml(AUTOSCALER_TOML).env as Record<string, string>;
}

/** One read of the api's /metrics: jobs[queue] = [waiting, scheduled, active], oldest[queue] in seconds. */
export interface QueuePoint {
  t: number;
  jobs: Record<string, [number, number, number]>;
  oldest: Record<string, number>;
}
export interface QueueRecording {
  description: string;
  recordedWith: string;
  burst: { startedAt: number; endedAt: number; accepted: number; refused: number };
  queues: string[];
  points: QueuePoint[];
}

export function readRecording(): QueueRecording {
  return JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures/queue-depths.json'), 'utf8')) as QueueRecording;
}

/** Jobs waiting or running in the stage queues. */
export function depth(point: QueuePoint): number {
  return STAGE_QUEUES.reduce((sum, q) => sum + (point.jobs[q]?.[0] ?? 0) + (point.jobs[q]?.[2] ?? 0), 0);
}

/** The oldest waiting job's age across the stage queues, in seconds. */
export function oldestAge(point: QueuePoint): number {
  return Math.max(0, ...STAGE_QUEUES.map((q) => point.oldest[q] ?? 0));
}

/** What FAS_PROMETHEUS_QUERY must give: depth, plus one machine's worth of jobs per full age step. */
export function queueLoad(depthJobs: number, ageSeconds: number): number {
  return depthJobs + JOBS_PER_MACHINE * Math.floor(ageSeconds / AGE_STEP_SECONDS);
}
