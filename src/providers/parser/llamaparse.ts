// LlamaParse (LlamaCloud) parser: uploads the document as a remote job, then reports its
// status and fetches its markdown. It speaks the v1 REST API directly with fetch (no SDK) so
// every request goes through one place that times it, counts it, retries what is transient
// and classifies what is not. Completion normally arrives by webhook (configured per upload);
// the pipeline polls `status()` as a fallback because deliveries can be lost.
//
// Error policy: 401/403 and refused requests are permanent ProviderErrors (retrying cannot
// help and must not hammer the API with a bad key); 429, 5xx, network errors and timeouts are
// retried here a few times, honouring Retry-After, and then surface as non-permanent
// ProviderErrors so the job queue retries later.
import { setTimeout as sleep } from 'node:timers/promises';
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

export interface LlamaParseOptions {
  apiKey: string;
  /** e.g. https://api.cloud.llamaindex.ai (EU: https://api.cloud.eu.llamaindex.ai). */
  baseUrl: string;
  organizationId?: string;
  projectId?: string;
  /** The `parse_mode` form field; unset: the account default. */
  parseMode?: string;
  /** Timeout of one HTTP request, the upload included. */
  timeoutSeconds: number;
  /** Requests per call, the first included, before a transient failure is given up. Default 4. */
  maxAttempts?: number;
  /** Longest in-process wait between attempts. Default 60000. */
  maxRetryWaitMs?: number;
}

/** The events whose delivery means the job is over: the pipeline needs no others. */
export const LLAMAPARSE_WEBHOOK_EVENTS = ['parse.success', 'parse.error', 'parse.partial_success', 'parse.cancelled'] as const;

/** The separator LlamaParse puts between pages of the markdown result. */
const PAGE_BREAK = '\n---\n';

const TERMINAL_STATUSES: ReadonlySet<string> = new Set(['SUCCESS', 'ERROR', 'PARTIAL_SUCCESS', 'CANCELLED']);
/**
 * Statuses that mean "not finished yet". The documented API answers only PENDING, but the
 * webhook events (parse.pending, parse.running) and newer API versions use these names too;
 * anything else is a response we do not understand and must not mistake for progress.
 */
const NON_TERMINAL_STATUSES: ReadonlySet<string> = new Set(['PENDING', 'RUNNING', 'QUEUED', 'IN_PROGRESS']);

const BASE_BACKOFF_MS = 500;

type Operation = 'upload' | 'status' | 'result';
type Outcome = 'ok' | 'rate_limited' | 'server_error' | 'client_error' | 'network_error';

export function createLlamaParseParser(options: LlamaParseOptions): AsyncParser {
  const maxAttempts = Math.max(1, options.maxAttempts ?? 4);
  const maxRetryWaitMs = Math.max(0, options.maxRetryWaitMs ?? 60_000);
  const timeoutMs = options.timeoutSeconds * 1000;
  const baseUrl = options.baseUrl.replace(/\/+$/, '');

  function urlFor(path: string): string {
    const url = new URL(baseUrl + path);
    if (options.organizationId) url.searchParams.set('organization_id', options.organizationId);
    if (options.projectId) url.searchParams.set('project_id', options.projectId);
    return url.toString();
  }

  /** The key must never reach a log line through an error message, whatever echoes it. */
  function redact(text: string): string {
    return options.apiKey ? text.split(options.apiKey).join('[redacted]') : text;
  }

  /**
   * One API call with the retry policy. `body` is a factory because a request body cannot
   * be sent twice. Returns the parsed JSON of a 2xx answer.
   */
  async function call(operation: Operation, method: 'GET' | 'POST', path: string, body?: () => FormData): Promise<unknown> {
    const url = urlFor(path);
    for (let attempt = 1; ; attempt++) {
      const endTimer = providerRequestDuration.startTimer({ provider: 'llamaparse', operation });
      const count = (outcome: Outcome) => {
        endTimer();
        providerRequests.inc({ provider: 'llamaparse', operation, outcome });
      };

      let response: Response;
      let text: string;
      try {
        // The timeout covers the body too: a server that stalls mid-answer is a timeout.
        const signal = AbortSignal.timeout(timeoutMs);
        response = await fetch(url, {
          method,
          headers: { authorization: `Bearer ${options.apiKey}`, accept: 'application/json' },
          body: body?.(),
          signal,
        });
        text = await response.text();
      } catch (err) {
        count('network_error');
        const reason = isTimeout(err) ? `timed out after ${options.timeoutSeconds} s` : `failed: ${describeNetworkError(err)}`;
        const message = redact(`LlamaParse ${operation} request ${reason}`);
        // Retrying an upload whose answer was lost may leave an orphan job at LlamaCloud
        // (its webhook names a job id nobody knows, and is ignored); losing the document
        // would be worse.
        if (attempt >= maxAttempts) {
          throw new ProviderError('PARSER_UNAVAILABLE', `${message} (${attempt} attempts)`, false, {}, { cause: err });
        }
        await sleep(Math.min(backoffMs(attempt), maxRetryWaitMs));
        continue;
      }

      const { status } = response;
      if (status >= 200 && status < 300) {
        count('ok');
        try {
          return JSON.parse(text) as unknown;
        } catch {
          throw badResponse(operation, `a non-JSON body (HTTP ${status})`);
        }
      }

      const transient = status === 429 || status === 408 || status >= 500;
      count(status === 429 ? 'rate_limited' : status >= 500 ? 'server_error' : 'client_error');

      if (status === 401) {
        throw new ProviderError('PARSER_AUTH_FAILED', 'LlamaParse rejected the API key (HTTP 401): check LLAMAPARSE_API_KEY', true, { status });
      }
      if (status === 403) {
        throw new ProviderError(
          'PARSER_FORBIDDEN',
          'LlamaParse refused access (HTTP 403): the API key has no access to this organization or project; check LLAMAPARSE_ORGANIZATION_ID / LLAMAPARSE_PROJECT_ID',
          true,
          { status },
        );
      }
      if (status === 404 && operation !== 'upload') {
        throw new ProviderError('PARSER_JOB_NOT_FOUND', `LlamaParse has no such job (HTTP 404 for ${path})`, true, { status });
      }
      if (!transient) {
        // A 404 on upload means the endpoint itself is missing, not the document's fault.
        const detail = status === 404 ? 'no such endpoint, check LLAMAPARSE_BASE_URL' : describeDetail(text);
        throw new ProviderError(
          'PARSER_REJECTED',
          redact(`LlamaParse refused the ${operation} request (HTTP ${status})${detail ? `: ${detail}` : ''}`),
          true,
          { status },
        );
      }

      const retryAfterMs = parseRetryAfter(response.headers);
      const code = status === 429 ? 'PARSER_RATE_LIMITED' : 'PARSER_UNAVAILABLE';
      const giveUp = (why: string) =>
        new ProviderError(code, `LlamaParse ${operation} request answered HTTP ${status} ${why}`, false, {
          status,
          ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
        });
      if (attempt >= maxAttempts) throw giveUp(`(${attempt} attempts)`);
      // A server asking for a longer pause than we may sleep here gets it from the job queue
      // (retryAfterMs travels with the error) rather than an early retry it would refuse.
      if (retryAfterMs !== undefined && retryAfterMs > maxRetryWaitMs) {
        throw giveUp(`and asked to retry after ${Math.ceil(retryAfterMs / 1000)} s`);
      }
      await sleep(retryAfterMs ?? Math.min(backoffMs(attempt), maxRetryWaitMs));
    }
  }

  return {
    kind: 'llamaparse',
    mode: 'async',

    async submit({ bytes, fileName, mediaType, webhook }: SubmitInput): Promise<{ jobId: string; status: ProviderJobStatus }> {
      // One Blob (one copy of the bytes) shared by every attempt. The cast only narrows
      // Buffer's ArrayBufferLike to what the DOM typings of BlobPart accept.
      const file = new Blob([bytes as Uint8Array<ArrayBuffer>], { type: mediaType });
      const form = () => {
        const data = new FormData();
        data.append('file', file, fileName);
        if (options.parseMode) data.append('parse_mode', options.parseMode);
        if (webhook) {
          data.append(
            'webhook_configurations',
            JSON.stringify([
              {
                webhook_url: webhook.url,
                webhook_events: LLAMAPARSE_WEBHOOK_EVENTS,
                webhook_headers: webhook.headers,
                // The default, "string", delivers the payload as a JSON-encoded string.
                webhook_output_format: 'json',
              },
            ]),
          );
        }
        return data;
      };
      const body = await call('upload', 'POST', '/api/v1/parsing/upload', form);
      const id = field(body, 'id');
      if (typeof id !== 'string' || id === '') throw badResponse('upload', 'no job id');
      // A cache hit can answer SUCCESS at once (and then send no webhook at all).
      const status = field(body, 'status');
      return { jobId: id, status: typeof status === 'string' && TERMINAL_STATUSES.has(status) ? (status as ProviderJobStatus) : 'PENDING' };
    },

    async status(jobId: string): Promise<ProviderJob> {
      const body = await call('status', 'GET', `/api/v1/parsing/job/${encodeURIComponent(jobId)}`);
      const status = field(body, 'status');
      if (typeof status !== 'string' || (!TERMINAL_STATUSES.has(status) && !NON_TERMINAL_STATUSES.has(status))) {
        throw badResponse('status', `an unknown job status ${JSON.stringify(status)}`);
      }
      const id = field(body, 'id');
      return {
        id: typeof id === 'string' && id !== '' ? id : jobId,
        status: (TERMINAL_STATUSES.has(status) ? status : 'PENDING') as ProviderJobStatus,
        errorCode: stringOrNull(field(body, 'error_code')),
        errorMessage: stringOrNull(field(body, 'error_message')),
      };
    },

    async result(jobId: string): Promise<ParsedDocument> {
      const body = await call('result', 'GET', `/api/v1/parsing/job/${encodeURIComponent(jobId)}/result/markdown`);
      const markdown = field(body, 'markdown');
      if (typeof markdown !== 'string') throw badResponse('result', 'no markdown');
      // Same rule as the local parser: a document without text cannot be chunked or embedded.
      if (markdown.trim() === '') throw new UnparseableDocumentError('LlamaParse found no text in the document');
      const jobPages = field(field(body, 'job_metadata'), 'job_pages');
      const pages =
        typeof jobPages === 'number' && Number.isSafeInteger(jobPages) && jobPages > 0 ? jobPages : markdown.split(PAGE_BREAK).length;
      return { markdown, pages };
    },
  };
}

function backoffMs(attempt: number): number {
  return BASE_BACKOFF_MS * 2 ** (attempt - 1);
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

function field(value: unknown, name: string): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[name] : undefined;
}

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
}

/** An answer we cannot use: likely a proxy or an API change, so retrying later may help. */
function badResponse(operation: Operation, what: string): ProviderError {
  return new ProviderError('PARSER_BAD_RESPONSE', `LlamaParse ${operation} response had ${what}`, false);
}

/** FastAPI errors: `{"detail": "text"}` or, for validation, `{"detail": [{"loc": [...], "msg": "..."}]}`. */
function describeDetail(text: string): string {
  let detail: unknown;
  try {
    detail = field(JSON.parse(text), 'detail');
  } catch {
    return text.trim().slice(0, 300);
  }
  if (typeof detail === 'string') return detail.slice(0, 500);
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        const msg = field(item, 'msg');
        const loc = field(item, 'loc');
        return typeof msg === 'string' ? (Array.isArray(loc) ? `${loc.join('.')}: ${msg}` : msg) : JSON.stringify(item);
      })
      .join('; ')
      .slice(0, 500);
  }
  return detail === undefined ? text.trim().slice(0, 300) : JSON.stringify(detail).slice(0, 500);
}

function isTimeout(err: unknown): boolean {
  const name = (err as { name?: string } | null)?.name;
  return name === 'TimeoutError' || name === 'AbortError';
}

/** fetch says only "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND...) is in the cause. */
function describeNetworkError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const cause = (err as { cause?: unknown } | null)?.cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: string }).code;
    return `${message} (${code ? `${code}: ` : ''}${cause.message})`;
  }
  return message;
}
