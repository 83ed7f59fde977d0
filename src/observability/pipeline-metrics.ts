// What committed events say for the metrics: the success bar (upload to final state), failures
// by code, pages parsed, and the estimated cost. Called after a transaction commits (never for
// a batch that rolled back), in every process that appends.
import type { Config } from '../config.ts';
import { costSettings, unitPrices } from '../documents/usage.ts';
import type { RecordedEvent } from '../events/catalog.ts';
import {
  bounded,
  documentProcessing,
  documentsFailed,
  embeddingTokens,
  eventsAppended,
  FAILURE_CODES,
  parserPages,
  providerCost,
  stageAttemptsFailed,
} from './metrics.ts';

interface Settings {
  parser: 'local' | 'llamaparse';
  embedder: 'local' | 'openai';
  /** Dollars per parsed page (0 for the local parser). */
  pageDollars: number;
  /** Dollars per embedded token (0 for the local embedder). */
  tokenDollars: number;
}

let settings: Settings = { parser: 'local', embedder: 'local', pageDollars: 0, tokenDollars: 0 };

/** The process's providers and prices, from its configuration: set once at start-up. */
export function configurePipelineMetrics(config: Pick<Config, 'parser' | 'embedder' | 'pricing'>): void {
  settings = {
    parser: config.parser.kind,
    embedder: config.embedder.kind,
    ...unitPrices(costSettings(config)),
  };
  // The success bar's series, from the start: the first failed document must count in rate().
  for (const outcome of ['ready', 'failed'] as const) documentProcessing.zero({ parser: settings.parser, embedder: settings.embedder, outcome });
}

/** The start of a document's first run: its upload, as the status row recorded it (the database clock). */
export interface FirstRunStart {
  uploaded_at: Date;
}

/**
 * Counts committed events. `row` is the document's status row after them (when the caller has
 * it): the processing time of a first run is its final event's time minus the upload's, both
 * from the database's clock, so machines' clocks do not matter. Reprocessed runs are not timed
 * (their start is not in the row); they are counted in the failure and event counters alike.
 */
export function observeCommitted(events: readonly RecordedEvent[], row?: FirstRunStart | null): void {
  for (const event of events) {
    eventsAppended.inc({ type: event.type });
    switch (event.type) {
      case 'DocumentReady':
      case 'DocumentFailed': {
        const outcome = event.type === 'DocumentReady' ? 'ready' : 'failed';
        if (event.type === 'DocumentFailed') documentsFailed.inc({ stage: event.data.stage ?? 'none', code: bounded(event.data.code, FAILURE_CODES) });
        if (row && event.data.run === 1) {
          const seconds = (event.createdAt.getTime() - row.uploaded_at.getTime()) / 1000;
          if (seconds >= 0) documentProcessing.observe({ parser: settings.parser, embedder: settings.embedder, outcome }, seconds);
        }
        break;
      }
      case 'StageAttemptFailed':
        stageAttemptsFailed.inc({ stage: event.data.stage, code: bounded(event.data.code, FAILURE_CODES) });
        break;
      case 'ParseSucceeded':
        parserPages.inc({ parser: settings.parser }, event.data.pages);
        if (settings.pageDollars > 0) providerCost.inc({ provider: 'llamaparse' }, event.data.pages * settings.pageDollars);
        break;
      default:
        break;
    }
  }
}

/** Tokens the embedder reported for one request, and what they cost. */
export function observeEmbeddingTokens(model: string, tokens: number): void {
  embeddingTokens.inc({ model }, tokens);
  if (settings.tokenDollars > 0) providerCost.inc({ provider: 'openai' }, tokens * settings.tokenDollars);
}
