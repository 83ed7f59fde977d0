// Chooses the adapters named by the configuration. The only place that knows every adapter.
import type { Config } from '../config.ts';
import { createLocalEmbedder } from './embedder/local.ts';
import { createLocalParser } from './parser/local.ts';
import { createFsStorage } from './storage/fs.ts';
import type { Embedder, Parser, Storage } from './types.ts';

export interface Providers {
  storage: Storage;
  parser: Parser;
  embedder: Embedder;
}

export function createProviders(config: Pick<Config, 'storage' | 'parser' | 'embedder'>): Providers {
  return {
    storage: createFsStorage(config.storage.dir),
    parser: createLocalParser(),
    embedder: createLocalEmbedder({ dimensions: config.embedder.dimensions }),
  };
}
