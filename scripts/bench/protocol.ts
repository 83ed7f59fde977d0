// Messages between the harness (the server process) and its load-generator child process.
import type { Summary } from './stats.ts';

export interface AutocannonJob {
  kind: 'autocannon';
  name: string;
  url: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  /** `multipart-4k`: a fresh, unique 4 KB text file per request. */
  body?: 'multipart-4k';
  connections: number;
  durationSeconds: number;
  warmupSeconds: number;
}

export interface AutocannonResult {
  name: string;
  connections: number;
  seconds: number;
  /** 2xx responses in the measured window. */
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  reqPerSec: number;
  /** Latency of 2xx responses, ms (from each response's own timing, sub-millisecond). */
  latency: Summary;
}

export interface UploadManyJob {
  kind: 'upload-many';
  url: string;
  token: string;
  count: number;
  concurrency: number;
  bytes: number;
}

export interface UploadManyResult {
  /** Epoch ms (sub-ms precision) when the first request was sent and the last answered. */
  startedAt: number;
  finishedAt: number;
  accepted: number;
  statusCodes: Record<string, number>;
  ids: string[];
  latency: Summary;
}

export interface UploadLargeJob {
  kind: 'upload-large';
  url: string;
  token: string;
  bytes: number;
}

export interface UploadLargeResult {
  status: number;
  id: string | null;
  seconds: number;
  body: string;
}

export type Job = AutocannonJob | UploadManyJob | UploadLargeJob;
export type JobResult = AutocannonResult | UploadManyResult | UploadLargeResult;

export interface CpuTimes {
  user: number;
  system: number;
}

export type ChildMessage =
  | { type: 'mark'; mark: 'start' | 'end'; cpu: CpuTimes }
  | { type: 'result'; result: JobResult; cpu: CpuTimes }
  | { type: 'error'; message: string };
