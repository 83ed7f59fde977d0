// POST /v1/search: the caller's chunks nearest to a query (src/documents/search.ts), the query
// embedded by the configured embedder, as the worker embeds the chunks. A user searches their own
// documents; the service role everyone's, or one owner's with ?owner=.
import type { FastifyError } from 'fastify';
import type { Sql } from '../../db/client.ts';
import type { VectorStore } from '../../db/vectors.ts';
import { searchChunks } from '../../documents/search.ts';
import type { Logger } from '../../observability/logger.ts';
import { ProviderError, type Embedder } from '../../providers/types.ts';
import type { Principal } from '../../security/tokens.ts';
import { HttpError } from '../errors.ts';
import type { App } from '../http.ts';
import { assertStorableText } from '../text.ts';
import { requestedOwner } from './documents.ts';
import { ErrorBody, SEARCH_LIMITS, SearchBody, SearchQuery, SearchResults } from './schemas.ts';

export interface SearchRoutesOptions {
  sql: Sql;
  embedder: Embedder;
  vectors: VectorStore;
  /** SEARCH_EMBED_TIMEOUT_SECONDS, in ms. */
  embedTimeoutMs: number;
  principal(request: unknown): Principal;
}

/**
 * A refused body, with a code per field: INVALID_QUERY, INVALID_K, TOO_MANY_DOCUMENT_IDS,
 * INVALID_DOCUMENT_ID; anything else (an undeclared property, a body that is not an object)
 * stays the API's VALIDATION_ERROR.
 */
function inputError(err: FastifyError): Error {
  const first = err.validation?.[0];
  if (err.validationContext !== 'body' || !first) return err;
  const missing = (first.params as { missingProperty?: unknown }).missingProperty;
  const field = first.keyword === 'required' && typeof missing === 'string' ? `/${missing}` : first.instancePath;
  if (field === '/query') {
    return new HttpError(400, 'INVALID_QUERY', `query must be text of 1 to ${SEARCH_LIMITS.queryMaxChars} characters, not whitespace alone`);
  }
  if (field === '/k') return new HttpError(400, 'INVALID_K', `k must be an integer from 1 to ${SEARCH_LIMITS.maxK}`);
  if (field === '/documentIds' && first.keyword === 'maxItems') {
    return new HttpError(400, 'TOO_MANY_DOCUMENT_IDS', `documentIds may name at most ${SEARCH_LIMITS.maxDocumentIds} documents`);
  }
  if (field.startsWith('/documentIds')) return new HttpError(400, 'INVALID_DOCUMENT_ID', 'documentIds must be an array of document ids (UUIDs)');
  return err;
}

/**
 * The query's vector. An embedder that cannot answer is 503 EMBEDDER_UNAVAILABLE (a timeout, an
 * outage, a 429 or the shared rate budget: worth retrying); one that refuses is 502
 * EMBEDDER_FAILED. The provider's own code and message go to the log, not to the client. A query
 * over the model's token limit (CHUNK_TOO_LONG: OpenAI's 8,191 tokens, which 4,000 characters
 * can exceed, e.g. emoji at about 3 tokens each) is the caller's to fix: 400 INVALID_QUERY. The
 * embedder counts the tokens itself and sends nothing then.
 */
async function embedQuery(options: SearchRoutesOptions, query: string, log: Logger): Promise<Float32Array> {
  let timer: NodeJS.Timeout | undefined;
  // The OpenAI embedder waits through 429s and for the budget it shares with the workers for as
  // long as a job may (minutes): a request gives up sooner, and leaves the call to finish alone.
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ProviderError('EMBED_TIMEOUT', `no answer within ${options.embedTimeoutMs} ms`, false)), options.embedTimeoutMs);
  });
  try {
    const [vector] = await Promise.race([options.embedder.embed([query]), timeout]);
    return vector!;
  } catch (err) {
    if (err instanceof ProviderError && err.code === 'CHUNK_TOO_LONG') {
      log.info({ err, embedder: options.embedder.kind }, 'the search query is over the embedding model\'s token limit');
      throw new HttpError(400, 'INVALID_QUERY', 'query has more tokens than the embedding model takes (OpenAI: 8,191); shorten it');
    }
    log.warn({ err, embedder: options.embedder.kind }, 'the search query could not be embedded');
    if (err instanceof ProviderError && !err.permanent) {
      const retryAfter = String(Math.max(1, Math.ceil((err.details.retryAfterMs ?? 1000) / 1000)));
      throw new HttpError(503, 'EMBEDDER_UNAVAILABLE', 'the embedder is unavailable; retry shortly', { 'retry-after': retryAfter });
    }
    throw new HttpError(502, 'EMBEDDER_FAILED', 'the embedder refused the query');
  } finally {
    clearTimeout(timer);
  }
}

export function registerSearchRoutes(app: App, options: SearchRoutesOptions): void {
  app.post('/v1/search', {
    // The handler turns a refused body into its field's code.
    attachValidation: true,
    schema: {
      querystring: SearchQuery,
      body: SearchBody,
      response: { 200: SearchResults, 400: ErrorBody, 502: ErrorBody, 503: ErrorBody },
    },
  }, async (request) => {
    if (request.validationError) throw inputError(request.validationError as FastifyError);
    const principal = options.principal(request);
    const owner = requestedOwner(principal, request.query.owner);
    const { query, k, documentIds } = request.body;
    assertStorableText('query', query);
    const embedding = await embedQuery(options, query, request.log);
    return { results: await searchChunks(options.sql, options.vectors, embedding, { k, owner, documentIds }) };
  });
}
