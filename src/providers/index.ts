// Chooses the adapters named by the configuration. The only place that knows every adapter.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config.ts';
import type { Sql } from '../db/client.ts';
import type { Logger } from '../observability/logger.ts';
import { sandboxTaskDuration, sandboxTasks } from '../observability/metrics.ts';
import { createRateBudget } from './embedder/budget.ts';
import { createLocalEmbedder } from './embedder/local.ts';
import { createOpenAIEmbedder } from './embedder/openai.ts';
import { createLlamaParseParser } from './parser/llamaparse.ts';
import { createSandbox } from './sandbox/pool.ts';
import type { PageCounter } from './parser/pages.ts';
import { createSandboxedChunker, createSandboxedPageCounter, createSandboxedParser } from './sandbox/sandboxed.ts';
import { createFsStorage } from './storage/fs.ts';
import { createSupabaseStorage } from './storage/supabase.ts';
import type { Chunker, Embedder, Parser, Storage } from './types.ts';

export interface Providers {
  storage: Storage;
  parser: Parser;
  /** Chunks parsed markdown, in the sandbox, whatever the parser. */
  chunker: Chunker;
  /** Counts a PDF's pages in the sandbox (estimates other formats') before a remote parse. */
  pages: PageCounter;
  embedder: Embedder;
  /** Starts the sandbox's processes ahead of the first document (the worker calls it; the api and webhook never start any). */
  warm(): void;
  /** Stops the sandbox's processes. */
  close(): Promise<void>;
}

export interface ProviderContext {
  /** The shared rate budget of remote embedders lives in Postgres. */
  sql: Sql;
  logger: Logger;
  /** Signs the fs storage's upload URLs (the API's PUT /v1/storage/upload verifies them). */
  uploadSigningKey: Buffer;
}

export function createStorage(config: Pick<Config, 'storage' | 'uploads'>, uploadSigningKey: Buffer): Storage {
  const storage = config.storage;
  return storage.kind === 'supabase'
    ? createSupabaseStorage({ url: storage.url, serviceKey: storage.serviceKey, bucket: storage.bucket, timeoutSeconds: storage.timeoutSeconds })
    : createFsStorage(storage.dir, { publicApiUrl: config.uploads.publicApiUrl, signingKey: uploadSigningKey });
}

export function createProviders(config: Pick<Config, 'storage' | 'parser' | 'embedder' | 'uploads' | 'parserLimits' | 'sandbox'>, context: ProviderContext): Providers {
  const { parser, embedder } = config;
  const sandbox = createSandbox({
    entry: new URL(`./sandbox/child${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url),
    processes: config.sandbox.processes,
    memoryMb: config.sandbox.memoryMb,
    timeoutMs: config.sandbox.timeoutSeconds * 1000,
    logger: context.logger,
    observe: (outcome, seconds) => {
      sandboxTasks.inc({ outcome });
      sandboxTaskDuration.observe({ outcome }, seconds);
    },
  });
  return {
    chunker: createSandboxedChunker(sandbox),
    pages: createSandboxedPageCounter(sandbox, config.parserLimits),
    warm: () => sandbox.warm(),
    close: () => sandbox.close(),
    storage: createStorage(config, context.uploadSigningKey),
    parser:
      parser.kind === 'llamaparse'
        ? createLlamaParseParser({
            apiKey: parser.apiKey,
            baseUrl: parser.baseUrl,
            organizationId: parser.organizationId,
            projectId: parser.projectId,
            tier: parser.tier,
            version: parser.version,
            timeoutSeconds: parser.timeoutSeconds,
            webhookSigningSecret: parser.webhookSigningSecret,
            jobTimeout: parser.jobTimeout,
            allowedPageFailureRatio: parser.allowedPageFailureRatio,
          })
        : createSandboxedParser(sandbox, config.parserLimits),
    embedder:
      embedder.kind === 'openai'
        ? createOpenAIEmbedder({
            apiKey: embedder.apiKey,
            baseUrl: embedder.baseUrl,
            model: embedder.model,
            dimensions: embedder.dimensions,
            timeoutSeconds: embedder.timeoutSeconds,
            maxRateLimitWaitSeconds: embedder.maxRateLimitWaitSeconds,
            budget: createRateBudget(context.sql, {
              name: `openai:${embedder.model}`,
              requestsPerMinute: embedder.requestsPerMinute,
              tokensPerMinute: embedder.tokensPerMinute,
            }),
            logger: context.logger.child({ component: 'openai-embedder' }),
          })
        : createLocalEmbedder({ dimensions: embedder.dimensions }),
  };
}
