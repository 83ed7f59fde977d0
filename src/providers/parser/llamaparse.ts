// LlamaParse (LlamaCloud) parser, v2 API, through the official SDK (@llamaindex/llama-cloud):
// the document goes up as a remote job with one configuration (tier, version, webhooks, time
// limits), then `status()` reads the job and `result()` fetches its pages. Completion normally
// arrives by webhook; the pipeline polls `status()` as a backstop because deliveries can be lost.
//
// The SDK brings the HTTP client, the multipart upload, timeouts, retries and typed errors. What
// docpipe adds around it, in one place (`instrumentedFetch` and `toProviderError`):
// - every HTTP attempt is timed and counted (docpipe_provider_requests_total, _duration_seconds);
// - the SDK honours any Retry-After however long: a longer pause than maxRetryWaitMs is not slept
//   in the worker (the answer is marked `x-should-retry: false`, the SDK's own switch); the
//   attempt ends, the error carries retryAfterMs, and pg-boss retries the stage with its backoff;
// - SDK errors become ProviderErrors: 401/403/400/422 permanent (retrying cannot help and must
//   not hammer the API with a bad key), 404 a missing job, 402 (credits), 408/409/429/5xx, timeouts
//   and network errors transient, after the SDK's retries.
//
// v2 has no partial status: a job is COMPLETED with some pages `success: false` (and FAILED when
// more than the configured share of pages failed). `result()` reads the pages, so it can say which
// pages failed; the document then ends ready with a PARTIAL_SUCCESS warning.
import LlamaCloud, { APIConnectionError, APIConnectionTimeoutError, APIError, toFile } from '@llamaindex/llama-cloud';
import { providerRequestDuration, providerRequests } from '../../observability/metrics.ts';
import {
  ProviderError,
  UnparseableDocumentError,
  type AsyncParser,
  type ParsedDocument,
  type ProviderJob,
  type ProviderJobStatus,
  type SubmitInput,
} from '../types.ts';
import { PAGE_SEPARATOR } from './shared.ts';

export const LLAMAPARSE_TIERS = ['fast', 'cost_effective', 'agentic', 'agentic_plus'] as const;
export type LlamaParseTier = (typeof LLAMAPARSE_TIERS)[number];
/** Credits per page of each tier (LlamaCloud's published prices; a cache hit costs 0). */
export const LLAMAPARSE_CREDITS_PER_PAGE: Record<LlamaParseTier, number> = { fast: 1, cost_effective: 3, agentic: 10, agentic_plus: 45 };

export interface LlamaParseOptions {
  apiKey: string;
  /** e.g. https://api.cloud.llamaindex.ai (EU: https://api.cloud.eu.llamaindex.ai). */
  baseUrl: string;
  organizationId?: string;
  projectId?: string;
  tier: LlamaParseTier;
  /** `latest` or a dated version such as 2026-09-07 (pin one in production: output cannot then change silently). */
  version: string;
  /** Timeout of one HTTP request, the upload included. */
  timeoutSeconds: number;
  /** Retries of a transient failure by the SDK, after the first request. Default 3. */
  maxRetries?: number;
  /** Longest Retry-After slept in-process; a longer one goes back to the job queue. Default 60000. */
  maxRetryWaitMs?: number;
  /** LLAMAPARSE_WEBHOOK_SIGNING_SECRET: sent as each webhook configuration's webhook_signing_secret. */
  webhookSigningSecret?: string;
  /** processing_control.timeouts sent with every job; LlamaCloud fails a job that runs longer. */
  jobTimeout: { baseSeconds: number; perPageSeconds: number };
  /** processing_control.job_failure_conditions.allowed_page_failure_ratio; unset: LlamaCloud's (0.05). */
  allowedPageFailureRatio?: number;
}

/** One page of a finished job, as LlamaCloud reports it. */
export type LlamaParsePage = { pageNumber: number; success: true; content: string } | { pageNumber: number; success: false; error: string };

export interface LlamaParseParser extends AsyncParser {
  /** The job's pages in `format` (`markdown`; `text`, the only one on the fast tier), in page order. */
  pages(jobId: string, format: 'markdown' | 'text'): Promise<LlamaParsePage[]>;
}

/** The events whose delivery means the job is over: the pipeline needs no others. */
export const LLAMAPARSE_WEBHOOK_EVENTS = ['parse.success', 'parse.error', 'parse.partial_success', 'parse.cancelled'] as const;

/**
 * After LlamaCloud's own time limit, how long docpipe still waits before it gives up on a job. The
 * limit covers the job's processing only: time queued at LlamaCloud before it starts, the last
 * webhook's retries (1 s, 2 s, 4 s, each up to 30 s) and the next poll (at most 60 s) come on top.
 */
const DEADLINE_GRACE_SECONDS = 30 * 60;
const DEFAULT_MAX_RETRY_WAIT_MS = 60_000;

type Operation = 'upload' | 'status' | 'result' | 'cancel';
type Outcome = 'ok' | 'rate_limited' | 'server_error' | 'client_error' | 'network_error';

/**
 * v2 has no error_code: the reason (PDF_IS_PROTECTED, TIMEOUT, ...) is inside error_message. A
 * code that opens the message ("CODE: ...") is taken as is; otherwise only a reason LlamaCloud
 * documents counts, so that a file name such as MY_REPORT_2024.pdf is never mistaken for one.
 */
const LEADING_CODE = /^([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)\s*:/;
const KNOWN_REASONS = ['PDF_IS_PROTECTED', 'NO_DATA_FOUND_IN_FILE', 'DOCUMENT_TOO_LARGE', 'TOO_MANY_PAGES', 'TIMEOUT'];
const KNOWN_REASON = new RegExp(`\\b(${KNOWN_REASONS.join('|')})\\b`);

export function reasonCode(message: string | null): string | null {
  if (!message) return null;
  return LEADING_CODE.exec(message)?.[1] ?? KNOWN_REASON.exec(message)?.[1] ?? null;
}

/** Statuses the SDK retries; a Retry-After on them longer than the worker may sleep goes to the queue. */
const isRetried = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500;

export function createLlamaParseParser(options: LlamaParseOptions): LlamaParseParser {
  const maxRetryWaitMs = Math.max(0, options.maxRetryWaitMs ?? DEFAULT_MAX_RETRY_WAIT_MS);
  // Only the ids that are set: the SDK would send a null one as an empty query parameter.
  const scope = {
    ...(options.organizationId ? { organization_id: options.organizationId } : {}),
    ...(options.projectId ? { project_id: options.projectId } : {}),
  };

  /** Times and counts each HTTP attempt (the SDK's retries included), and caps Retry-After. */
  const instrumentedFetch: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const operation: Operation =
      method === 'POST' ? (url.pathname.endsWith('/cancel') ? 'cancel' : 'upload') : url.searchParams.has('expand') ? 'result' : 'status';
    const endTimer = providerRequestDuration.startTimer({ provider: 'llamaparse', operation });
    const count = (outcome: Outcome) => {
      endTimer();
      providerRequests.inc({ provider: 'llamaparse', operation, outcome });
    };
    // The SDK's own timeout stops at the response headers; this one also covers the body, so a
    // server that stalls mid-answer cannot hold a worker's job.
    const timeout = AbortSignal.timeout(options.timeoutSeconds * 1000);
    const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await fetch(input, { ...init, signal });
    } catch (err) {
      count('network_error');
      throw err;
    }
    const { status } = response;
    count(status < 400 ? 'ok' : status === 429 ? 'rate_limited' : status >= 500 ? 'server_error' : 'client_error');
    const retryAfterMs = parseRetryAfter(response.headers);
    if (retryAfterMs !== undefined && retryAfterMs > maxRetryWaitMs && isRetried(status)) {
      const headers = new Headers(response.headers);
      headers.set('x-should-retry', 'false');
      return new Response(response.body, { status, statusText: response.statusText, headers });
    }
    return response;
  };

  const client = new LlamaCloud({
    apiKey: options.apiKey,
    baseURL: options.baseUrl.replace(/\/+$/, ''),
    // The SDK's default is 5 in code (2 in its README): say it.
    maxRetries: options.maxRetries ?? 3,
    timeout: options.timeoutSeconds * 1000,
    fetch: instrumentedFetch,
    // The SDK logs warnings to the console by default; docpipe's own logs carry the errors.
    logLevel: 'off',
  });

  /** The key and the signing secret must never reach a log line through an error message, whatever echoes them. */
  const secrets = [options.apiKey, options.webhookSigningSecret].filter((v): v is string => typeof v === 'string' && v.length >= 8);
  const redact = (text: string) => secrets.reduce((out, secret) => out.split(secret).join('[redacted]'), text);

  function toProviderError(operation: Operation, err: unknown): ProviderError {
    if (err instanceof ProviderError) return err;
    if (err instanceof APIConnectionTimeoutError) {
      return new ProviderError('PARSER_UNAVAILABLE', `LlamaParse ${operation} request timed out after ${options.timeoutSeconds} s`, false, {}, { cause: err });
    }
    if (err instanceof APIConnectionError) {
      return new ProviderError('PARSER_UNAVAILABLE', redact(`LlamaParse ${operation} request failed: ${describeNetworkError(err)}`), false, {}, { cause: err });
    }
    // The body timeout above fires while the SDK reads the answer, outside its own error classes.
    const name = (err as { name?: string } | null)?.name;
    if (name === 'TimeoutError' || name === 'AbortError') {
      return new ProviderError('PARSER_UNAVAILABLE', `LlamaParse ${operation} request timed out after ${options.timeoutSeconds} s`, false, {}, { cause: err });
    }
    if (!(err instanceof APIError) || err.status === undefined) {
      return new ProviderError('PARSER_BAD_RESPONSE', redact(`LlamaParse ${operation} failed: ${(err as Error)?.message ?? String(err)}`), false, {}, { cause: err });
    }
    const status = err.status;
    const detail = describeDetail(err.error);
    switch (true) {
      case status === 401:
        return new ProviderError('PARSER_AUTH_FAILED', 'LlamaParse rejected the API key (HTTP 401): check LLAMAPARSE_API_KEY and that LLAMAPARSE_BASE_URL is its region', true, { status });
      case status === 402:
        // Not the document's fault and fixed by an operator (credits, a project cap): a stage
        // attempt, retried with the queue's backoff; only exhausted retries fail the document.
        return new ProviderError(
          'PARSER_QUOTA_EXCEEDED',
          redact(`LlamaParse refused the job: credits or quota exhausted (HTTP 402)${detail ? `: ${detail}` : ''}; add credits or raise the project's cap, then reprocess`),
          false,
          { status },
        );
      case status === 403:
        return new ProviderError(
          'PARSER_FORBIDDEN',
          'LlamaParse refused access (HTTP 403): the API key has no access to this organization or project; check LLAMAPARSE_ORGANIZATION_ID / LLAMAPARSE_PROJECT_ID',
          true,
          { status },
        );
      case status === 404 && operation !== 'upload':
        return new ProviderError('PARSER_JOB_NOT_FOUND', redact(`LlamaParse has no such job (HTTP 404)${detail ? `: ${detail}` : ''}; results expire after 48 hours`), true, { status });
      case isRetried(status): {
        const retryAfterMs = err.headers ? parseRetryAfter(err.headers) : undefined;
        return new ProviderError(
          status === 429 ? 'PARSER_RATE_LIMITED' : 'PARSER_UNAVAILABLE',
          redact(`LlamaParse ${operation} request answered HTTP ${status}${retryAfterMs !== undefined && retryAfterMs > maxRetryWaitMs ? ` and asked to retry after ${Math.ceil(retryAfterMs / 1000)} s` : ' (retries exhausted)'}`),
          false,
          { status, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) },
          { cause: err },
        );
      }
      default: {
        // A 404 on upload means the endpoint itself is missing, not the document's fault.
        const why = status === 404 ? 'no such endpoint, check LLAMAPARSE_BASE_URL' : detail;
        return new ProviderError('PARSER_REJECTED', redact(`LlamaParse refused the ${operation} request (HTTP ${status})${why ? `: ${why}` : ''}`), true, { status });
      }
    }
  }

  async function call<T>(operation: Operation, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (err) {
      throw toProviderError(operation, err);
    }
  }

  async function pages(jobId: string, format: 'markdown' | 'text'): Promise<LlamaParsePage[]> {
    const body = await call('result', () => client.parsing.get(jobId, { ...scope, expand: [format] }));
    const list = format === 'text' ? body?.text?.pages : body?.markdown?.pages;
    if (!Array.isArray(list)) throw badResponse('result', `no ${format} pages`);
    return [...list]
      .sort((a, b) => a.page_number - b.page_number)
      .map((page): LlamaParsePage => {
        if ('success' in page && page.success === false) return { pageNumber: page.page_number, success: false, error: String(page.error ?? 'unknown error') };
        const content = 'markdown' in page ? page.markdown : 'text' in page ? page.text : undefined;
        if (typeof content !== 'string') throw badResponse('result', `a page without content (page ${page.page_number})`);
        return { pageNumber: page.page_number, success: true, content };
      });
  }

  return {
    kind: 'llamaparse',
    mode: 'async',
    pages,

    async cancel(jobId: string): Promise<void> {
      await call('cancel', () => client.parsing.cancel(jobId, { ...scope }, { maxRetries: 0 }));
    },

    timeLimitSeconds(pages: number): number {
      return options.jobTimeout.baseSeconds + options.jobTimeout.perPageSeconds * Math.max(1, pages) + DEADLINE_GRACE_SECONDS;
    },

    async submit({ bytes, fileName, mediaType, webhook }: SubmitInput): Promise<{ jobId: string; status: ProviderJobStatus; credits: number | null }> {
      const job = await call('upload', async () =>
        client.parsing.create({
          ...scope,
          tier: options.tier,
          version: options.version,
          // toFile copies bytes in memory once into a File; a file-backed Blob becomes a File
          // without being read, and the SDK's multipart body reads it as it sends (and again on
          // a retry).
          upload_file: bytes instanceof Blob ? new File([bytes], fileName, { type: mediaType }) : await toFile(bytes, fileName, { type: mediaType }),
          processing_control: {
            timeouts: { base_in_seconds: options.jobTimeout.baseSeconds, extra_time_per_page_in_seconds: options.jobTimeout.perPageSeconds },
            ...(options.allowedPageFailureRatio !== undefined
              ? { job_failure_conditions: { allowed_page_failure_ratio: options.allowedPageFailureRatio } }
              : {}),
          },
          ...(webhook
            ? {
                webhook_configurations: [
                  {
                    webhook_url: webhook.url,
                    webhook_events: [...LLAMAPARSE_WEBHOOK_EVENTS],
                    webhook_headers: webhook.headers,
                    // The default, "string", delivers the payload as a JSON-encoded string.
                    webhook_output_format: 'json',
                    ...(options.webhookSigningSecret ? { webhook_signing_secret: options.webhookSigningSecret } : {}),
                  },
                ],
              }
            : {}),
        }),
      );
      if (typeof job?.id !== 'string' || job.id === '') throw badResponse('upload', 'no job id');
      // A cache hit can answer COMPLETED at once (and then send no webhook at all). The job exists
      // whatever its status says: a status we do not know must not make the stage submit again.
      let status: ProviderJobStatus;
      try {
        status = mapStatus('upload', job.status);
      } catch {
        status = 'PENDING';
      }
      return { jobId: job.id, status, credits: typeof job.usage?.credits === 'number' ? job.usage.credits : null };
    },

    async status(jobId: string): Promise<ProviderJob> {
      const body = await call('status', () => client.parsing.get(jobId, { ...scope }));
      const job = body?.job;
      const status = mapStatus('status', job?.status);
      const message = typeof job?.error_message === 'string' && job.error_message !== '' ? job.error_message : null;
      const credits = job?.usage?.credits;
      return {
        id: typeof job?.id === 'string' && job.id !== '' ? job.id : jobId,
        status,
        errorCode: status === 'ERROR' || status === 'CANCELLED' ? reasonCode(message) : null,
        errorMessage: message,
        credits: typeof credits === 'number' && Number.isFinite(credits) ? credits : null,
      };
    },

    async result(jobId: string): Promise<ParsedDocument> {
      // Per-page content, not markdown_full: only the pages say which ones failed (v2 has no
      // partial status), and they carry the page count. Fast-tier jobs have no markdown (LlamaCloud
      // answers 400), only text: the job's own tier decides, not the one configured now (it may
      // have changed since the job was submitted).
      const { job } = await call('status', () => client.parsing.get(jobId, { ...scope }));
      const all = await pages(jobId, (job?.tier ?? options.tier) === 'fast' ? 'text' : 'markdown');
      const failed = all.filter((p) => !p.success).map((p) => `page ${p.pageNumber}: ${p.error}`);
      // Joined as LlamaCloud joins markdown_full, and as the local parser separates pages.
      const markdown = all.flatMap((p) => (p.success && p.content.trim() !== '' ? [p.content.trim()] : [])).join(PAGE_SEPARATOR);
      // Same rule as the local parser: a document without text cannot be chunked or embedded.
      if (markdown === '') throw new UnparseableDocumentError('LlamaParse found no text in the document');
      return {
        markdown,
        pages: all.length,
        ...(failed.length > 0
          ? {
              warning: {
                code: 'PARTIAL_SUCCESS',
                message: `${failed.length} of ${all.length} pages could not be parsed: ${failed.slice(0, 5).join('; ')}${failed.length > 5 ? '; ...' : ''}`.slice(0, 1000),
              },
            }
          : {}),
      };
    },
  };
}

/** v2's statuses in docpipe's vocabulary; anything else is an answer we must not mistake for progress. */
function mapStatus(operation: Operation, status: unknown): ProviderJobStatus {
  switch (status) {
    case 'PENDING':
    case 'RUNNING':
      return 'PENDING';
    case 'COMPLETED':
      return 'SUCCESS';
    case 'FAILED':
      return 'ERROR';
    case 'CANCELLED':
      return 'CANCELLED';
    default:
      throw badResponse(operation, `an unknown job status ${JSON.stringify(status)}`);
  }
}

/** `retry-after-ms` (OpenAI-style, milliseconds) or `Retry-After` in seconds or as an HTTP date. */
export function parseRetryAfter(headers: Headers, now = Date.now()): number | undefined {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && ms.trim() !== '') {
    const value = Number(ms);
    if (Number.isFinite(value) && value >= 0) return Math.ceil(value);
  }
  const header = headers.get('retry-after');
  if (header === null || header.trim() === '') return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return seconds >= 0 ? Math.ceil(seconds * 1000) : undefined;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** An answer we cannot use: likely a proxy or an API change, so retrying later may help. */
function badResponse(operation: Operation, what: string): ProviderError {
  return new ProviderError('PARSER_BAD_RESPONSE', `LlamaParse ${operation} response had ${what}`, false);
}

/** FastAPI errors: `{"detail": "text"}` or, for validation (422), `{"detail": [{"loc": [...], "msg": "..."}]}`. */
export function describeDetail(body: unknown): string {
  const detail = typeof body === 'object' && body !== null ? (body as { detail?: unknown }).detail : body;
  if (typeof detail === 'string') return detail.slice(0, 500);
  if (Array.isArray(detail)) {
    return detail
      .map((item: { msg?: unknown; loc?: unknown }) =>
        typeof item?.msg === 'string' ? (Array.isArray(item.loc) ? `${item.loc.join('.')}: ${item.msg}` : item.msg) : JSON.stringify(item),
      )
      .join('; ')
      .slice(0, 500);
  }
  return detail === undefined || detail === null ? '' : JSON.stringify(detail).slice(0, 500);
}

/** The SDK says "Connection error."; the reason (ECONNREFUSED, ENOTFOUND...) is in the causes. */
function describeNetworkError(err: Error): string {
  const reasons: string[] = [err.message];
  for (let cause = (err as { cause?: unknown }).cause, depth = 0; cause instanceof Error && depth < 3; cause = (cause as { cause?: unknown }).cause, depth++) {
    const code = (cause as { code?: string }).code;
    reasons.push(`${code ? `${code}: ` : ''}${cause.message}`);
  }
  return reasons.join(' <- ');
}
