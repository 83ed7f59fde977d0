// The worker: pg-boss handlers that run the pipeline's stages, with per-job child loggers that
// carry the upload's request id, stage metrics, and an HTTP port for health only.
import type { Job, JobWithMetadata, PgBoss } from 'pg-boss';
import type { Config } from '../../config.ts';
import type { CommandContext } from '../../documents/commands.ts';
import { runDeadLetter, runEmbedStage, runParseResult, runParseStage, runPurge, type PipelineDeps, type StageOutcome } from '../../documents/pipeline.ts';
import { runMaintenance } from '../../documents/maintenance.ts';
import type { Logger } from '../../observability/logger.ts';
import { jobsCompleted, jobsFailed, stageDuration } from '../../observability/metrics.ts';
import type { Providers } from '../../providers/index.ts';
import { QUEUES, type JobData, type QueueName } from '../../queue/jobs.ts';

export interface WorkerDeps {
  config: Pick<Config, 'queue' | 'chunking' | 'embedBatchSize' | 'parser' | 'webhook'>;
  boss: PgBoss;
  ctx: CommandContext;
  providers: Providers;
  logger: Logger;
}

export interface RunningWorker {
  /** Stops fetching; in-flight jobs finish (pg-boss's graceful stop waits for them). */
  stop(): Promise<void>;
}

const MAINTENANCE_CRON = '*/15 * * * *';

const STAGE_OF: Partial<Record<string, 'parse' | 'embed'>> = { [QUEUES.parse]: 'parse', [QUEUES.parseResult]: 'parse', [QUEUES.embed]: 'embed' };

export async function startWorker(deps: WorkerDeps): Promise<RunningWorker> {
  const pipeline: PipelineDeps = {
    ctx: deps.ctx,
    ...deps.providers,
    chunking: deps.config.chunking,
    embedBatchSize: deps.config.embedBatchSize,
    remoteParse: {
      webhookBaseUrl: deps.config.webhook.publicUrl,
      webhookSecret: deps.config.webhook.secret,
      pollAfterSeconds: deps.config.parser.kind === 'llamaparse' ? deps.config.parser.pollAfterSeconds : 60,
      deadlineMinutes: deps.config.parser.kind === 'llamaparse' ? deps.config.parser.deadlineMinutes : 45,
    },
  };
  const log = deps.logger.child({ service: 'worker' });

  async function run(queue: QueueName, job: Job<JobData> | JobWithMetadata<JobData>, body: (jobLog: Logger) => Promise<StageOutcome>) {
    const jobLog = log.child({ queue, jobId: job.id, documentId: job.data.documentId, run: job.data.run, requestId: job.data.requestId, retryCount: job.retryCount });
    const stop = stageDuration.startTimer({ stage: queue.replace(/^docpipe-/, '') });
    try {
      const outcome = await body(jobLog);
      stop({ outcome });
      jobsCompleted.inc({ queue });
      jobLog.info({ outcome }, 'job finished');
    } catch (err) {
      stop({ outcome: 'error' });
      jobsFailed.inc({ queue });
      jobLog.warn({ err }, 'job attempt failed; pg-boss retries it with backoff');
      throw err;
    }
  }

  const options = {
    localConcurrency: deps.config.queue.concurrency,
    pollingIntervalSeconds: deps.config.queue.pollingIntervalSeconds,
    notifyPollingIntervalSeconds: deps.config.queue.pollingIntervalSeconds,
  };
  const stage = (queue: QueueName, body: (data: JobData, l: Logger) => Promise<StageOutcome>) =>
    deps.boss.work<JobData>(queue, options, async ([job]) => run(queue, job!, (l) => body(job!.data, l)));
  await stage(QUEUES.parse, (data, l) => runParseStage(pipeline, data, l));
  await stage(QUEUES.parseResult, (data, l) => runParseResult(pipeline, data, l));
  await stage(QUEUES.embed, (data, l) => runEmbedStage(pipeline, data, l));
  await stage(QUEUES.purge, (data) => runPurge(pipeline, data));
  await deps.boss.work(QUEUES.maintenance, options, async ([job]) =>
    run(QUEUES.maintenance, job! as Job<JobData>, async (l) => {
      await runMaintenance({ sql: deps.ctx.sql, storage: deps.providers.storage, webhookRetentionDays: deps.config.webhook.deliveryRetentionDays }, l);
      return 'done';
    }),
  );
  // Stored in the database and fired once per slot across every worker (pg-boss's cron).
  await deps.boss.schedule(QUEUES.maintenance, MAINTENANCE_CRON);
  await deps.boss.work(QUEUES.deadLetter, { ...options, includeMetadata: true as const }, async ([job]: JobWithMetadata<JobData>[]) =>
    run(QUEUES.deadLetter, job!, async (l) => {
      const source = STAGE_OF[job!.sourceName ?? ''] ?? null;
      l.warn({ sourceQueue: job!.sourceName, sourceRetryCount: job!.sourceRetryCount }, 'stage retries exhausted');
      return runDeadLetter(pipeline, job!.data, source, job!.sourceRetryCount);
    }),
  );
  log.info({ queues: Object.values(QUEUES), concurrency: options.localConcurrency }, 'worker started');
  return {
    async stop() {
      await Promise.all(Object.values(QUEUES).map((q) => deps.boss.offWork(q, { wait: true })));
    },
  };
}
