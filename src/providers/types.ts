// The provider interfaces the pipeline depends on. `documents` and `services` use only
// these; each adapter (local, llamaparse, openai, fs, supabase) implements one of them.
import type { Readable } from 'node:stream';

/** Media types docpipe accepts, decided by sniffing the bytes, never by the file name. */
export const SUPPORTED_MEDIA_TYPES = [
  'text/plain',
  'text/markdown',
  'text/html',
  'application/pdf',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
] as const;
export type MediaType = (typeof SUPPORTED_MEDIA_TYPES)[number];

export interface StoredObject {
  key: string;
  size: number;
  /** Lower-case hex SHA-256 of the bytes, computed while writing. */
  sha256: string;
}

export interface PutOptions {
  /** Abort with ObjectTooLargeError once more than this many bytes arrive. */
  maxBytes?: number;
  contentType?: string;
  /**
   * The body's exact length, when the caller knows it. Supabase applies the bucket's
   * `file_size_limit` only to uploads that declare their length; a body of another length fails.
   */
  size?: number;
}

export interface Storage {
  readonly kind: string;
  /** Streams `body` to `key`, hashing while writing; the object appears whole or not at all. */
  put(key: string, body: Readable | AsyncIterable<Uint8Array>, options?: PutOptions): Promise<StoredObject>;
  /** A stream of the object's bytes; ObjectNotFoundError when absent. */
  get(key: string): Promise<Readable>;
  /** The first `length` bytes (fewer if the object is shorter); ObjectNotFoundError when absent. */
  head(key: string, length: number): Promise<Buffer>;
  /** Size in bytes, or null when absent. */
  stat(key: string): Promise<{ size: number } | null>;
  /** Removes every object whose key starts with `prefix`; absent objects are not an error. */
  deletePrefix(prefix: string): Promise<void>;
  /** Readiness: resolves when the storage can be written, throws with a clear message otherwise. */
  check(): Promise<void>;
  /** Creates what the storage needs (the Supabase bucket, the fs root); idempotent. `docpipe setup-storage`. */
  setup(): Promise<'created' | 'exists'>;
  /**
   * A URL the client PUTs the bytes of `key` to, without going through the API's body. Supabase:
   * a signed upload URL of the storage server; fs: the API's own PUT /v1/storage/upload route.
   */
  createSignedUpload(key: string, options: SignedUploadOptions): Promise<SignedUpload>;
}

export interface SignedUploadOptions {
  expiresInSeconds: number;
  /** Most bytes the URL accepts (fs enforces it; Supabase enforces the bucket's limit). */
  maxBytes: number;
  contentType: string;
}

export interface SignedUpload {
  /** Absolute URL; the client sends `PUT url` with the raw bytes as the body. */
  url: string;
  method: 'PUT';
  /** Headers the client must send with the PUT. */
  headers: Record<string, string>;
  expiresAt: Date;
}

export interface ParsedDocument {
  markdown: string;
  pages: number;
  /** The parse succeeded without some of the document (pages a remote parser could not read). */
  warning?: { code: string; message: string };
}

/** Lets the worker abandon a task when it shuts down (the sandbox kills the child running it). */
export interface TaskOptions {
  signal?: AbortSignal;
}

/** A parser that answers within the parse job (the local parser, in the sandbox). */
export interface SyncParser {
  readonly kind: string;
  readonly mode: 'sync';
  parse(bytes: Buffer, mediaType: MediaType, options?: TaskOptions): Promise<ParsedDocument>;
  /**
   * True when this media type parses in the worker itself, in one short linear pass that no
   * document can make crash or stall the worker: the stage then needs no attempt of its own
   * opened before it (documents/pipeline.ts).
   */
  inline?(mediaType: MediaType): boolean;
}

/** Where the provider should call back when its job finishes. */
export interface ParserWebhook {
  url: string;
  /** Sent with every delivery (the per-document credential goes here). */
  headers: Record<string, string>;
}

/**
 * A remote job's state in docpipe's own words (each adapter maps its provider's): still running,
 * finished (its result may carry a warning), failed, or cancelled.
 */
export type ProviderJobStatus = 'PENDING' | 'SUCCESS' | 'ERROR' | 'CANCELLED';

export interface ProviderJob {
  id: string;
  status: ProviderJobStatus;
  errorCode: string | null;
  errorMessage: string | null;
  /** What the provider billed for the job so far (LlamaCloud credits); null or absent: not known. */
  credits?: number | null;
}

export interface SubmitInput {
  /** The document: in memory, or a Blob backed by a file on disk (fs.openAsBlob), sent as it is read. */
  bytes: Buffer | Blob;
  fileName: string;
  mediaType: MediaType;
  /** Null: no webhook is requested, the pipeline polls. */
  webhook: ParserWebhook | null;
}

/** A parser that runs as a remote job: submit, then a webhook or polling says when it is done. */
export interface AsyncParser {
  readonly kind: string;
  readonly mode: 'async';
  /** `status`: what the submission answered; a terminal one (a cache hit) is checked at once. */
  submit(input: SubmitInput): Promise<{ jobId: string; status?: ProviderJobStatus }>;
  status(jobId: string): Promise<ProviderJob>;
  /** The markdown of a finished (SUCCESS) job. */
  result(jobId: string): Promise<ParsedDocument>;
  /** Stops a job docpipe gave up on, so it bills no more (best effort; optional). */
  cancel?(jobId: string): Promise<void>;
  /**
   * How long a job for a document of `pages` pages may take before docpipe gives up on it
   * (PARSE_TIMEOUT): the provider's own limit for that size, plus the time its last webhook or
   * the next poll needs to arrive.
   */
  timeLimitSeconds(pages: number): number;
}

export type Parser = SyncParser | AsyncParser;

export interface Chunk {
  index: number;
  text: string;
  tokenCount: number;
}

export interface ChunkOptions {
  maxTokens: number;
  overlapTokens: number;
  /** More tokens than this in the whole document: DocumentLimitError (MAX_DOCUMENT_TOKENS). Unset: no limit. */
  maxDocumentTokens?: number;
}

/** Splits parsed markdown (UTF-8 bytes) into chunks. The worker's runs in the sandbox, off its main thread. */
export interface Chunker {
  chunk(markdown: Uint8Array, options: ChunkOptions, taskOptions?: TaskOptions): Promise<Chunk[]>;
}

/**
 * Limits the local parser checks before (or while) it does the work they bound, so a small
 * file cannot make it inflate, extract or recurse without end. Defaults in DEFAULT_PARSER_LIMITS;
 * each is a setting (config.ts) and is described in docs/LIMITS.md.
 */
export interface ParserLimits {
  /** PDF: most pages (read from the page tree before any page is extracted). */
  pdfMaxPages: number;
  /** PDF: largest inflated size of one non-image stream (content, object, font streams). */
  pdfMaxStreamBytes: number;
  /** PDF: largest inflated size of all non-image streams together. */
  pdfMaxInflatedBytes: number;
  /** DOCX: largest uncompressed size of the XML parts together (from the zip's central directory). */
  docxMaxXmlBytes: number;
  /** DOCX: largest uncompressed/compressed ratio of one entry (entries over 1 MiB uncompressed). */
  docxMaxCompressionRatio: number;
  /** HTML: deepest element nesting. */
  htmlMaxDepth: number;
}

export const DEFAULT_PARSER_LIMITS: ParserLimits = {
  pdfMaxPages: 5000,
  pdfMaxStreamBytes: 64 * 1024 * 1024,
  pdfMaxInflatedBytes: 512 * 1024 * 1024,
  docxMaxXmlBytes: 32 * 1024 * 1024,
  docxMaxCompressionRatio: 200,
  htmlMaxDepth: 512,
};

export interface Embedder {
  readonly kind: string;
  readonly model: string;
  readonly dimensions: number;
  /** One L2-normalised vector per input, in input order. */
  embed(texts: string[]): Promise<Float32Array[]>;
}

export class ObjectNotFoundError extends Error {
  readonly code = 'OBJECT_NOT_FOUND';
  constructor(readonly key: string) {
    super(`object not found: ${key}`);
    this.name = 'ObjectNotFoundError';
  }
}

export class ObjectTooLargeError extends Error {
  readonly code = 'FILE_TOO_LARGE';
  constructor(readonly limit: number) {
    super(`file exceeds the limit of ${limit} bytes`);
    this.name = 'ObjectTooLargeError';
  }
}

export class InvalidKeyError extends Error {
  readonly code = 'INVALID_STORAGE_KEY';
  constructor(readonly key: string) {
    super(`invalid storage key: ${JSON.stringify(key)}`);
    this.name = 'InvalidKeyError';
  }
}

/**
 * A provider call failed. `permanent`: retrying cannot help (bad key, wrong project, a request
 * the provider refuses); the document fails at once with `code`. Otherwise the job is retried.
 */
export class ProviderError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly permanent: boolean,
    readonly details: { status?: number; retryAfterMs?: number } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ProviderError';
  }
}

/**
 * The document exceeds a configured limit (pages, inflated size, compression ratio, nesting
 * depth, tokens): permanent, not retried. `setting` names the variable that raises the limit.
 */
export class DocumentLimitError extends Error {
  readonly code = 'DOCUMENT_LIMIT_EXCEEDED';
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(message);
    this.name = 'DocumentLimitError';
  }
}

/**
 * Processing the document exhausted the sandbox: its memory, its time or its stack, or the
 * sandbox process died under it. Permanent, not retried (the same document would do it again).
 */
export class DocumentTooComplexError extends Error {
  readonly code = 'DOCUMENT_TOO_COMPLEX';
  constructor(
    readonly reason: 'memory' | 'time' | 'stack' | 'crash',
    message: string,
  ) {
    super(message);
    this.name = 'DocumentTooComplexError';
  }
}

/** The parser could not read the document (corrupt, encrypted, empty): permanent, not retried. */
export class UnparseableDocumentError extends Error {
  readonly code = 'UNPARSEABLE_DOCUMENT';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UnparseableDocumentError';
  }
}
