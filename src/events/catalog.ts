// The event catalog: every event type, its payload and its schema version. Events are small
// facts; large payloads (the parsed markdown) live in storage and the event holds the key.
// Bump a type's version when its payload changes shape, and teach `evolve` to read both.

export type Stage = 'parse' | 'embed';

export interface EventPayloads {
  DocumentUploaded: {
    ownerId: string;
    fileName: string;
    mediaType: string;
    size: number;
    sha256: string;
    storageKey: string;
    idempotencyKey: string | null;
  };
  ParseStarted: { run: number; attempt: number; parser: string };
  /**
   * The document went to a remote parser (LlamaParse) as job `providerJobId`. A webhook or the
   * poll that starts `pollAfterSeconds` later finishes the parse; `deadline` bounds the wait.
   */
  ParseSubmitted: { run: number; parser: string; providerJobId: string; webhook: boolean; pollAfterSeconds: number; deadline: string };
  /** The parser called back for the current provider job; the result is fetched by a job, not on the request. */
  ParserCallbackReceived: { run: number; providerJobId: string; eventId: string; eventType: string };
  /**
   * v2 adds `partial`: the provider finished with PARTIAL_SUCCESS (some pages failed) and said
   * why. v1 events have no `partial`, read as null.
   */
  ParseSucceeded: { run: number; parsedKey: string; pages: number; characters: number; sha256: string; partial?: { code: string; message: string } | null };
  EmbeddingStarted: { run: number; attempt: number };
  /** A stage attempt failed and will be retried (until its retry limit dead-letters it). */
  StageAttemptFailed: { run: number; stage: Stage; attempt: number; code: string; message: string };
  DocumentChunked: { run: number; chunkCount: number; tokenCount: number; batchSize: number; batches: number };
  EmbeddingBatchStored: { run: number; batch: number; fromChunk: number; toChunk: number; model: string; dimensions: number };
  DocumentReady: { run: number; chunkCount: number };
  DocumentFailed: { run: number; stage: Stage | null; code: string; message: string };
  ReprocessRequested: { run: number; reason: string | null };
  DocumentDeleted: { reason: string | null };
}

export type EventType = keyof EventPayloads;

export const EVENT_VERSIONS: { readonly [K in EventType]: number } = {
  DocumentUploaded: 1,
  ParseStarted: 1,
  ParseSubmitted: 1,
  ParserCallbackReceived: 1,
  ParseSucceeded: 2,
  EmbeddingStarted: 1,
  StageAttemptFailed: 1,
  DocumentChunked: 1,
  EmbeddingBatchStored: 1,
  DocumentReady: 1,
  DocumentFailed: 1,
  ReprocessRequested: 1,
  DocumentDeleted: 1,
};

export const EVENT_TYPES = Object.keys(EVENT_VERSIONS) as EventType[];

/** An event about to be appended. */
export type NewEvent = { [K in EventType]: { type: K; data: EventPayloads[K] } }[EventType];

/** Who or what caused an event, and the request it belongs to. On every event. */
export interface EventMetadata {
  /** Shared by every event of one logical flow (an upload and all the stages it triggers). */
  correlationId: string;
  /** The event (or request) that directly caused this one. */
  causationId: string | null;
  /** `user:<sub>`, `worker`, `webhook:<provider>` or `system`. */
  actor: string;
  /** The HTTP request id that started the flow, carried through jobs into the worker. */
  requestId: string | null;
}

export type RecordedEvent = { [K in EventType]: RecordedEventOf<K> }[EventType];

export interface RecordedEventOf<K extends EventType> {
  eventId: string;
  globalPosition: number;
  streamId: string;
  streamVersion: number;
  type: K;
  typeVersion: number;
  data: EventPayloads[K];
  metadata: EventMetadata;
  createdAt: Date;
}

export function isEventType(type: string): type is EventType {
  return Object.hasOwn(EVENT_VERSIONS, type);
}
