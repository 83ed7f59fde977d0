// Commands for tests of the command handler: an Upload of a small text file, stored at the
// document's usual key.
import type { DocumentCommand } from '../../src/documents/document.ts';

export function uploadCommand(documentId: string, ownerId = 'user-1'): DocumentCommand {
  return {
    type: 'Upload',
    ownerId,
    fileName: 'a.txt',
    mediaType: 'text/plain',
    size: 11,
    sha256: 'c'.repeat(64),
    storageKey: `documents/${documentId}/original`,
    idempotencyKey: null,
  };
}
