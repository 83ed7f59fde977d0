// Queue names and job payloads. Plain types, no pg-boss: `documents` decides which jobs an
// event triggers, `queue/boss.ts` sends them in the event's transaction.

export const QUEUES = {
  /** Parse the original (or submit it to an external parser). */
  parse: 'docpipe-parse',
  /** Chunk the parsed markdown, embed in batches, store chunks; ends in DocumentReady. */
  embed: 'docpipe-embed',
  /** Remove the files of a deleted document. */
  purge: 'docpipe-purge',
  /** Stage jobs that exhausted their retries land here; the handler records DocumentFailed. */
  deadLetter: 'docpipe-dead-letter',
} as const;

export type QueueName = (typeof QUEUES)[keyof typeof QUEUES];

export interface JobData {
  documentId: string;
  run: number;
  /** Carried into the metadata of every event the job appends, and into the worker's logs. */
  correlationId: string;
  causationId: string;
  requestId: string | null;
}

export interface JobRequest {
  queue: QueueName;
  data: JobData;
}

/** Sends jobs inside the caller's transaction (`tx` is a postgres.js transaction). */
export interface JobSender {
  send(tx: unknown, jobs: readonly JobRequest[]): Promise<void>;
}
