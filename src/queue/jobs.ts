import { createHash } from 'node:crypto';

// Queue names and job payloads. Plain types, no pg-boss: `documents` decides which jobs an
// event triggers, `queue/boss.ts` sends them in the event's transaction.

export const QUEUES = {
  /** Parse the original (or submit it to an external parser). */
  parse: 'docpipe-parse',
  /**
   * Asks a remote parser how its job went and, when it is done, fetches and stores the result.
   * Sent by a webhook (at once) and by the polling chain that starts after the webhook grace.
   */
  parseResult: 'docpipe-parse-result',
  /** Chunk the parsed markdown, embed in batches, store chunks; ends in DocumentReady. */
  embed: 'docpipe-embed',
  /** Remove the files of a deleted document. */
  purge: 'docpipe-purge',
  /** Stage jobs that exhausted their retries land here; the handler records DocumentFailed. */
  deadLetter: 'docpipe-dead-letter',
  /** Housekeeping on a schedule (documents/maintenance.ts). */
  maintenance: 'docpipe-maintenance',
} as const;

export type QueueName = (typeof QUEUES)[keyof typeof QUEUES];

export interface JobData {
  documentId: string;
  run: number;
  /** Carried into the metadata of every event the job appends, and into the worker's logs. */
  correlationId: string;
  causationId: string;
  requestId: string | null;
  /** docpipe-parse-result: the remote parser's job this check is about. */
  providerJobId?: string;
  /** docpipe-parse-result: position in the polling chain (0, 1, ...); null when a webhook sent it. */
  poll?: number | null;
}

export interface JobRequest {
  queue: QueueName;
  data: JobData;
  /** Run no earlier than this many seconds from now. */
  startAfterSeconds?: number;
  /** A deterministic job id: sending the same job twice creates it once (pg-boss inserts ON CONFLICT DO NOTHING). */
  id?: string;
}

/** A stable UUID-shaped job id derived from `parts` (a name-based id, like UUID v5). */
export function stableJobId(...parts: (string | number)[]): string {
  const hex = createHash('sha256').update(parts.join('\u0000')).digest('hex');
  // Version nibble 8 (custom, RFC 9562) and the RFC 4122 variant, so it is a well-formed UUID.
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${((parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16)}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

/** Sends jobs inside the caller's transaction (`tx` is a postgres.js transaction). */
export interface JobSender {
  send(tx: unknown, jobs: readonly JobRequest[]): Promise<void>;
}
