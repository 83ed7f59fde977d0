// The worker: pg-boss handlers that run the pipeline's stages, with per-job child loggers that
// carry the upload's request id, stage metrics, and an HTTP port for health only.
import type { JobResult, JobWithMetadata, PgBoss } from 'pg-boss';
import type { Config } from '../../config.ts';
import { createCommandGroup, type CommandContext } from '../../documents/commands.ts';
import { runDeadLetter, runEmbedStage, runParseResult, runParseStage, runPurge, type JobContext, type PipelineDeps, type StageOutcome } from '../../documents/pipeline.ts';
import { runMaintenance } from '../../documents/maintenance.ts';
import type { Logger } from '../../observability/logger.ts';
import { bounded, deadLetters, jobPickup, jobsCompleted, jobsFailed, stageDuration } from '../../observability/metrics.ts';
import type { Providers } from '../../providers/index.ts';
import { QUEUES, type JobData, type QueueName } from '../../queue/jobs.ts';
import { createByteBudget } from '../../util/byte-budget.ts';

export interface WorkerDeps {
  config: Pick<Config, 'databasePoolMax' | 'queue' | 'chunking' | 'embedBatchSize' | 'parser' | 'webhook' | 'shutdownTimeoutMs' | 'workerDocumentBudgetBytes' | 'security'>;
  boss: PgBoss;
  ctx: CommandContext;
  providers: Providers;
  logger: Logger;
}

export interface RunningWorker {
  /**
   * Stops fetching; in-flight jobs get `graceMs` (default 60 % of SHUTDOWN_TIMEOUT_MS) to finish.
   * Jobs still running then are aborted: their sandbox tasks are killed and their attempts
   * recorded as WORKER_SHUTDOWN, so pg-boss retries them later and nobody mistakes them for a crash.
   */
  stop(options?: { graceMs?: number }): Promise<void>;
}

/** How long aborted jobs get to record their attempts before stop() returns anyway. */
const ABORT_SETTLE_MS = 3_000;

/**
 * Command transactions of one worker in flight at once: half its pool, so the pipeline keeps
 * moving while a batch waits on its commit (and on the network, for a worker far from its
 * database), and the other half serves the stages' reads and the housekeeping.
 */
export const commandLanes = (poolMax: number) => Math.max(2, Math.floor(poolMax / 2));

const MAINTENANCE_CRON = '*/15 * * * *';

const STAGE_OF: Partial<Record<string, 'parse' | 'embed'>> = { [QUEUES.parse]: 'parse', [QUEUES.parseResult]: 'parse', [QUEUES.embed]: 'embed' };

/**
 * How a worker takes WORKER_CONCURRENCY jobs of one queue at a time: `fetchers` loops, each
 * claiming up to `batchSize` jobs per statement, so at most fetchers x batchSize (about
 * WORKER_CONCURRENCY) run at once and the memory sizing of docs/LIMITS.md holds. At least two
 * loops where the concurrency allows, so one slow document never holds every slot of its queue
 * until its whole batch is done.
 */
export function batchPlan(concurrency: number, maxBatch: number): { fetchers: number; batchSize: number } {
  const fetchers = Math.min(concurrency, Math.max(2, Math.ceil(concurrency / maxBatch)));
  return { fetchers, batchSize: Math.max(1, Math.floor(concurrency / fetchers)) };
}

/** What pg-boss stores on a failed job (its `output`), as it stores a thrown error's. */
function failureOutput(err: unknown): { name?: string; message: string; code?: string; stack?: string } {
  if (!(err instanceof Error)) return { message: String(err) };
  const code = (err as { code?: unknown }).code;
  return { name: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}), stack: err.stack };
}

export async function startWorker(deps: WorkerDeps): Promise<RunningWorker> {
  const pipeline: PipelineDeps = {
    // The stages' commands from concurrent jobs commit together (group commit).
    ctx: { ...deps.ctx, group: createCommandGroup(deps.ctx, { maxBatch: 64, concurrency: commandLanes(deps.config.databasePoolMax) }) },
    ...deps.providers,
    chunking: deps.config.chunking,
    embedBatchSize: deps.config.embedBatchSize,
    memory: createByteBudget(deps.config.workerDocumentBudgetBytes),
    remoteParse: {
      webhookBaseUrl: deps.config.webhook.publicUrl,
      webhookSecret: deps.config.webhook.secret,
      pollAfterSeconds: deps.config.parser.kind === 'llamaparse' ? deps.config.parser.pollAfterSeconds : 60,
    },
  };
  const log = deps.logger.child({ service: 'worker' });
  deps.providers.warm();
  const shutdown = new AbortController();
  const inFlight = new Set<Promise<unknown>>();

  async function run(queue: QueueName, job: JobWithMetadata<JobData>, body: (context: JobContext) => Promise<StageOutcome>) {
    const stage = queue.replace(/^docpipe-/, '');
    const jobLog = log.child({
      queue,
      stage,
      jobId: job.id,
      documentId: job.data.documentId,
      run: job.data.run,
      requestId: job.data.requestId,
      correlationId: job.data.correlationId,
      retryCount: job.retryCount,
    });
    // From when the job could run (created, or its start-after: a poll's delay, a retry's
    // backoff) to now, on the database's clock both.
    const runnableAt = Math.max(job.createdOn.getTime(), job.startAfter.getTime());
    jobPickup.observe({ queue }, Math.max(0, job.startedOn.getTime() - runnableAt) / 1000);
    const startedAt = performance.now();
    const running = body({ log: jobLog, signal: shutdown.signal });
    inFlight.add(running);
    try {
      const outcome = await running;
      const durationMs = Math.round(performance.now() - startedAt);
      stageDuration.observe({ stage, outcome }, durationMs / 1000);
      jobsCompleted.inc({ queue });
      jobLog.info({ outcome, durationMs }, 'job finished');
    } catch (err) {
      const durationMs = Math.round(performance.now() - startedAt);
      stageDuration.observe({ stage, outcome: 'error' }, durationMs / 1000);
      jobsFailed.inc({ queue });
      jobLog.warn({ err, durationMs }, 'job attempt failed; pg-boss retries it with backoff');
      throw err;
    } finally {
      inFlight.delete(running);
    }
  }

  // Maintenance (one run at a time anyway) and dead letters (rare): one fetch loop each, one job at
  // a time. Each loop polls its queue through pg-boss's small pool: WORKER_CONCURRENCY loops of
  // them would crowd out the stages' claims and completions (measured: 256 idle loops at
  // WORKER_CONCURRENCY=128 held a far worker's completions back by seconds).
  const options = {
    localConcurrency: 1,
    pollingIntervalSeconds: deps.config.queue.pollingIntervalSeconds,
    notifyPollingIntervalSeconds: deps.config.queue.pollingIntervalSeconds,
    // createdOn, startAfter and startedOn, for the pickup latency.
    includeMetadata: true as const,
  };
  // Stage queues: fetched in batches (one claim statement and one completion for many jobs),
  // and fetched again at once while batches come back full, so a backlog drains at the speed of
  // the work instead of a batch per polling interval. The jobs of a batch run concurrently and
  // settle one by one (perJobResults): a failed job is retried alone.
  const plan = batchPlan(deps.config.queue.concurrency, deps.config.queue.batchSize);
  const stageOptions = {
    ...options,
    localConcurrency: plan.fetchers,
    batchSize: plan.batchSize,
    burstWhenBatchFull: plan.batchSize > 1,
    perJobResults: true as const,
  };
  const stage = (queue: QueueName, body: (data: JobData, context: JobContext) => Promise<StageOutcome>) =>
    deps.boss.work(queue, stageOptions, (jobs: JobWithMetadata<JobData>[]) =>
      Promise.all(
        jobs.map((job) =>
          run(queue, job, (context) => body(job.data, context)).then(
            (): JobResult => ({ id: job.id, status: 'completed' }),
            (err: unknown): JobResult => ({ id: job.id, status: 'failed', output: failureOutput(err) }),
          ),
        ),
      ),
    );
  await stage(QUEUES.parse, (data, context) => runParseStage(pipeline, data, context));
  await stage(QUEUES.parseResult, (data, context) => runParseResult(pipeline, data, context));
  await stage(QUEUES.embed, (data, context) => runEmbedStage(pipeline, data, context));
  await stage(QUEUES.purge, (data) => runPurge(pipeline, data));
  await deps.boss.work(QUEUES.maintenance, options, async ([job]: JobWithMetadata<JobData>[]) =>
    run(QUEUES.maintenance, job!, async ({ log: l }) => {
      await runMaintenance({ sql: deps.ctx.sql, storage: deps.providers.storage, webhookRetentionDays: deps.config.webhook.deliveryRetentionDays, auditRetentionDays: deps.config.security.auditRetentionDays }, l);
      return 'done';
    }),
  );
  // Stored in the database and fired once per slot across every worker (pg-boss's cron).
  await deps.boss.schedule(QUEUES.maintenance, MAINTENANCE_CRON);
  await deps.boss.work(QUEUES.deadLetter, options, async ([job]: JobWithMetadata<JobData>[]) =>
    run(QUEUES.deadLetter, job!, async ({ log: l }) => {
      const source = STAGE_OF[job!.sourceName ?? ''] ?? null;
      // Counted on every attempt of the dead-letter job's handler would count retries too: once, on the first.
      if (job!.retryCount === 0) deadLetters.inc({ queue: bounded(job!.sourceName, Object.values(QUEUES)) });
      l.warn({ sourceQueue: job!.sourceName, sourceRetryCount: job!.sourceRetryCount }, 'stage retries exhausted');
      return runDeadLetter(pipeline, job!.data, source, job!.sourceRetryCount);
    }),
  );
  log.info({ queues: Object.values(QUEUES), concurrency: options.localConcurrency }, 'worker started');
  const settled = (ms: number) =>
    Promise.race([Promise.allSettled([...inFlight]), new Promise((resolve) => setTimeout(resolve, ms).unref())]);
  return {
    async stop({ graceMs = Math.round(deps.config.shutdownTimeoutMs * 0.6) } = {}) {
      await Promise.all(Object.values(QUEUES).map((q) => deps.boss.offWork(q, { wait: false })));
      await settled(graceMs);
      if (inFlight.size > 0) {
        log.warn({ jobs: inFlight.size, graceMs }, 'jobs still running at the end of the drain: aborting them; they are retried later');
        shutdown.abort();
        await settled(ABORT_SETTLE_MS);
      }
    },
  };
}
