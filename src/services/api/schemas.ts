// TypeBox schemas of the API: request validation and response serialization both come from here.
import { Type, type Static } from 'typebox';
import type { DocumentStatusRow } from '../../projections/document-status.ts';

export const ErrorBody = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String(), requestId: Type.String() }),
});

export const DocumentParams = Type.Object({ id: Type.String({ format: 'uuid' }) });

export const Status = Type.Union(
  ['uploaded', 'parsing', 'parsed', 'embedding', 'ready', 'failed'].map((s) => Type.Literal(s)),
);

const Timestamp = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

export const DocumentView = Type.Object({
  id: Type.String(),
  fileName: Type.String(),
  mediaType: Type.String(),
  size: Type.Integer(),
  sha256: Type.String(),
  status: Type.String(),
  stage: Type.Union([Type.String(), Type.Null()]),
  progress: Type.Integer(),
  run: Type.Integer(),
  attempts: Type.Object({ parse: Type.Integer(), embed: Type.Integer() }),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  /** The remote parser's job of the current run, and its PARTIAL_SUCCESS warning if any. */
  parser: Type.Object({
    jobId: Type.Union([Type.String(), Type.Null()]),
    warning: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  }),
  chunkCount: Type.Integer(),
  embeddingBatches: Type.Object({ done: Type.Integer(), total: Type.Integer() }),
  version: Type.Integer(),
  timestamps: Type.Object({
    uploadedAt: Type.String(),
    parseStartedAt: Timestamp,
    parsedAt: Timestamp,
    embedStartedAt: Timestamp,
    readyAt: Timestamp,
    failedAt: Timestamp,
    updatedAt: Type.String(),
  }),
  links: Type.Object({ self: Type.String(), events: Type.String() }),
});
export type DocumentView = Static<typeof DocumentView>;

export const Accepted = Type.Object({
  id: Type.String(),
  status: Type.String(),
  run: Type.Integer(),
  statusUrl: Type.String(),
});

export const GetQuery = Type.Object({
  wait: Type.Optional(Type.Integer({ minimum: 0, maximum: 300, description: 'Long-poll: seconds to wait for a change' })),
});

/** One owner's documents (the service role; a user may name only themselves). */
const Owner = Type.String({ minLength: 1, maxLength: 255 });

export const ListQuery = Type.Object({
  status: Type.Optional(Status),
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  cursor: Type.Optional(Type.String({ maxLength: 200, pattern: '^[A-Za-z0-9_-]+$' })),
  owner: Type.Optional(Owner),
});

export const DocumentList = Type.Object({
  documents: Type.Array(DocumentView),
  nextCursor: Type.Union([Type.String(), Type.Null()]),
});

export const EventView = Type.Object({
  position: Type.Integer(),
  version: Type.Integer(),
  type: Type.String(),
  typeVersion: Type.Integer(),
  data: Type.Record(Type.String(), Type.Unknown()),
  correlationId: Type.String(),
  causationId: Type.Union([Type.String(), Type.Null()]),
  actor: Type.String(),
  requestId: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
});

export const EventList = Type.Object({ events: Type.Array(EventView) });

export const ReprocessBody = Type.Union([
  Type.Object({ reason: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false }),
  Type.Null(),
]);

/** Bounds of POST /v1/search (docs/PROVIDERS.md, "Search"). */
export const SEARCH_LIMITS = {
  /** A question or a passage, not a document: OpenAI takes 8,191 tokens, about 30,000 characters. */
  queryMaxChars: 4000,
  /** match_chunks (migration 005) caps match_count at the same number. */
  maxK: 50,
  defaultK: 5,
  maxDocumentIds: 100,
} as const;

export const SearchQuery = Type.Object({ owner: Type.Optional(Owner) });

export const SearchBody = Type.Object(
  {
    // \S: a query of whitespace alone has no words to embed.
    query: Type.String({ minLength: 1, maxLength: SEARCH_LIMITS.queryMaxChars, pattern: '\\S', description: 'The text to find chunks like' }),
    k: Type.Integer({ minimum: 1, maximum: SEARCH_LIMITS.maxK, default: SEARCH_LIMITS.defaultK, description: 'How many chunks to return' }),
    documentIds: Type.Optional(
      // The pattern as well: Ajv's uuid format also takes a urn:uuid: prefix, which Postgres refuses.
      Type.Array(Type.String({ format: 'uuid', pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' }), {
        maxItems: SEARCH_LIMITS.maxDocumentIds,
        description: 'Search within these documents only',
      }),
    ),
  },
  { additionalProperties: false },
);

export const SearchResults = Type.Object({
  results: Type.Array(
    Type.Object({
      documentId: Type.String(),
      chunkIndex: Type.Integer(),
      /** Cosine similarity of the chunk's embedding and the query's, -1 to 1 (higher is closer). */
      score: Type.Number(),
      text: Type.String(),
    }),
  ),
});

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function toView(row: DocumentStatusRow): DocumentView {
  return {
    id: row.id,
    fileName: row.file_name,
    mediaType: row.media_type,
    size: Number(row.size_bytes),
    sha256: row.sha256,
    status: row.status,
    stage: row.stage,
    progress: row.progress,
    run: row.run,
    attempts: { parse: row.parse_attempts, embed: row.embed_attempts },
    error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
    parser: {
      jobId: row.parser_job_id,
      warning: row.parse_warning_code ? { code: row.parse_warning_code, message: row.parse_warning_message ?? '' } : null,
    },
    chunkCount: row.chunk_count,
    embeddingBatches: { done: row.batches_done, total: row.batches_total },
    version: row.version,
    timestamps: {
      uploadedAt: row.uploaded_at.toISOString(),
      parseStartedAt: iso(row.parse_started_at),
      parsedAt: iso(row.parsed_at),
      embedStartedAt: iso(row.embed_started_at),
      readyAt: iso(row.ready_at),
      failedAt: iso(row.failed_at),
      updatedAt: row.updated_at.toISOString(),
    },
    links: { self: `/v1/documents/${row.id}`, events: `/v1/documents/${row.id}/events` },
  };
}
