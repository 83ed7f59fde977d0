// Local-filesystem object storage, for development, tests and single-machine deployments
// (a Fly volume). Keys map to files under `root`; writes go to `<root>/.tmp/` first, are
// hashed and size-limited as they stream, fsynced, then renamed into place, so a reader sees
// an object whole or not at all even with concurrent writers or a crash mid-upload. The temp
// file is created with the first byte, so an upload that sends nothing holds no file
// descriptor here; the temp area is created on first use, not checked on every put. Both
// fsyncs stay: without the file's, ext4's delayed allocation can publish the name before the
// bytes (an empty file after a crash); without the directory's, the rename itself may be lost
// (scripts/bench/fsync-upload.ts measures what they cost). Keys come from the domain but are
// still validated strictly: a key is the only path input that reaches the filesystem, and a
// traversal bug here would expose the whole machine (the rules live in keys.ts, shared with
// the other adapters). Signed uploads go to the API's own `PUT /v1/storage/upload?token=...`
// route (services/api/storage-upload.ts), with a token signed by upload-token.ts.
import { randomUUID } from 'node:crypto';
import { mkdir, open, rename, rm, stat as fsStat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  InvalidKeyError,
  ObjectNotFoundError,
  type PutOptions,
  type SignedUpload,
  type SignedUploadOptions,
  type Storage,
  type StoredObject,
} from '../types.ts';
import { assertValidKey, normalizePrefix, RESERVED_TMP_SEGMENT } from './keys.ts';
import { createPutMeter } from './meter.ts';
import { createUploadTokens, type UploadTokens } from './upload-token.ts';

/** Temp files live inside root so the final rename never crosses a filesystem boundary. */
const TMP_DIR = RESERVED_TMP_SEGMENT;

export interface FsStorageOptions {
  /** Public base URL of the API (no trailing slash needed), for signed upload URLs. */
  publicApiUrl?: string;
  /** HMAC key of the upload tokens; the API's upload route must verify with the same key. */
  signingKey?: string | Buffer;
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && codes.includes((err as NodeJS.ErrnoException).code ?? '');
}

/** Opens a new file (`wx`); its directory (the temp area) is created if it is missing. */
async function openNew(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'wx', 0o644);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
    // Made by setup(), or here on first use or after someone removed it.
    await mkdir(dirname(path), { recursive: true });
    return open(path, 'wx', 0o644);
  }
}

/**
 * A new file (`wx`) written like fs.createWriteStream with `flush: true` (fsynced before it
 * finishes), but created only when the first chunk arrives (or at the end, empty). `closed`
 * settles once no handle is open or opening, so a failed write can be unlinked after it.
 * Chunks queued while a write is in flight go out in one writev, without being copied together.
 */
function lazyFileWriter(path: string): { stream: Writable; closed: Promise<void> } {
  let opening: Promise<FileHandle> | undefined;
  let markClosed!: () => void;
  const closed = new Promise<void>((resolve) => (markClosed = resolve));
  const handle = () => (opening ??= openNew(path));
  const writeAll = async (chunk: Buffer) => {
    const h = await handle();
    for (let offset = 0; offset < chunk.length; ) offset += (await h.write(chunk, offset, chunk.length - offset)).bytesWritten;
  };
  const writeAllv = async (chunks: Buffer[]) => {
    const h = await handle();
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const { bytesWritten } = await h.writev(chunks);
    if (bytesWritten === total) return;
    // A short write (rare on a regular file): the rest one chunk at a time, from where it stopped.
    let skip = bytesWritten;
    for (const chunk of chunks) {
      if (skip >= chunk.length) {
        skip -= chunk.length;
        continue;
      }
      await writeAll(chunk.subarray(skip));
      skip = 0;
    }
  };
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      writeAll(chunk).then(() => callback(), callback);
    },
    writev(chunks, callback) {
      writeAllv(chunks.map((c) => c.chunk as Buffer)).then(() => callback(), callback);
    },
    final(callback) {
      handle()
        .then(async (h) => {
          await h.sync();
          await h.close();
          opening = undefined;
        })
        .then(() => callback(), callback);
    },
    destroy(err, callback) {
      const pending = opening;
      opening = undefined;
      if (!pending) {
        markClosed();
        callback(err);
        return;
      }
      pending
        .then((h) => h.close())
        .catch(() => undefined)
        .then(() => {
          markClosed();
          callback(err);
        });
    },
  });
  return { stream, closed };
}

export function createFsStorage(root: string, options: FsStorageOptions = {}): Storage {
  const rootDir = resolve(root);
  const tmpDir = resolve(rootDir, TMP_DIR);
  const rootPrefix = rootDir.endsWith(sep) ? rootDir : rootDir + sep;
  const publicApiUrl = options.publicApiUrl?.replace(/\/+$/, '');
  let tokens: UploadTokens | undefined;

  function pathFor(key: string): string {
    assertValidKey(key);
    const full = resolve(rootDir, key);
    // Belt and braces: the checks above should make this impossible, but it is the invariant.
    if (!full.startsWith(rootPrefix)) throw new InvalidKeyError(key);
    return full;
  }

  async function syncDir(dir: string): Promise<void> {
    // Persist the rename itself; some filesystems refuse fsync on a directory, which only
    // weakens durability, so that is not an error.
    try {
      const handle = await open(dir, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch {
      /* best effort */
    }
  }

  async function openExisting(key: string, full: string) {
    try {
      const handle = await open(full, 'r');
      const info = await handle.stat().catch(async (err: unknown) => {
        await handle.close();
        throw err;
      });
      if (!info.isFile()) {
        await handle.close();
        throw new ObjectNotFoundError(key);
      }
      return handle;
    } catch (err) {
      if (isErrno(err, 'ENOENT', 'ENOTDIR', 'EISDIR')) throw new ObjectNotFoundError(key);
      throw err;
    }
  }

  return {
    kind: 'fs',

    async put(key: string, body: Readable | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<StoredObject> {
      const full = pathFor(key);
      const meter = createPutMeter(options, body);
      const tmp = resolve(tmpDir, randomUUID());
      // Fsynced before it finishes, so the rename publishes durable bytes.
      const file = lazyFileWriter(tmp);
      try {
        await pipeline(body, meter.stream, file.stream);
        await mkdir(dirname(full), { recursive: true });
        await rename(tmp, full);
      } catch (err) {
        // No handle may be open, or still opening, when the temp file is unlinked.
        file.stream.destroy();
        await file.closed;
        await unlink(tmp).catch(() => undefined);
        throw err;
      }
      await syncDir(dirname(full));
      return { key, size: meter.size, sha256: meter.sha256() };
    },

    async get(key: string): Promise<Readable> {
      const handle = await openExisting(key, pathFor(key));
      // The stream owns the handle from here and closes it at end or on destroy.
      return handle.createReadStream();
    },

    async head(key: string, length: number): Promise<Buffer> {
      if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`head length must be a non-negative integer, got ${length}`);
      const handle = await openExisting(key, pathFor(key));
      try {
        const buffer = Buffer.alloc(length);
        let filled = 0;
        while (filled < length) {
          const { bytesRead } = await handle.read(buffer, filled, length - filled, filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
        return buffer.subarray(0, filled);
      } finally {
        await handle.close();
      }
    },

    async stat(key: string): Promise<{ size: number } | null> {
      try {
        const info = await fsStat(pathFor(key));
        return info.isFile() ? { size: info.size } : null;
      } catch (err) {
        if (isErrno(err, 'ENOENT', 'ENOTDIR')) return null;
        throw err;
      }
    },

    async deletePrefix(prefix: string): Promise<void> {
      // Prefixes are whole path segments (`documents/<id>` removes that document's
      // directory, never `documents/<id>-other`); a trailing slash is tolerated.
      await rm(pathFor(normalizePrefix(prefix)), { recursive: true, force: true });
    },

    async check(): Promise<void> {
      const probe = resolve(tmpDir, `probe-${randomUUID()}`);
      try {
        await mkdir(tmpDir, { recursive: true });
        await writeFile(probe, 'ok');
        await unlink(probe);
      } catch (err) {
        throw new Error(`fs storage root ${rootDir} is not writable: ${(err as Error).message}`, { cause: err });
      }
    },

    async setup(): Promise<'created' | 'exists'> {
      // mkdir -p answers the first directory it created, undefined when root already existed.
      const created = await mkdir(rootDir, { recursive: true });
      await mkdir(tmpDir, { recursive: true });
      return created === undefined ? 'exists' : 'created';
    },

    async createSignedUpload(key: string, opts: SignedUploadOptions): Promise<SignedUpload> {
      assertValidKey(key);
      if (!publicApiUrl || options.signingKey === undefined) {
        throw new Error('fs storage cannot create signed uploads: it was created without publicApiUrl and signingKey');
      }
      if (!Number.isFinite(opts.expiresInSeconds) || opts.expiresInSeconds <= 0) throw new RangeError(`expiresInSeconds must be positive, got ${opts.expiresInSeconds}`);
      tokens ??= createUploadTokens(options.signingKey);
      const expiresAt = new Date(Date.now() + Math.round(opts.expiresInSeconds * 1000));
      const token = tokens.sign({ key, maxBytes: opts.maxBytes, contentType: opts.contentType, expiresAt });
      return {
        url: `${publicApiUrl}/v1/storage/upload?token=${encodeURIComponent(token)}`,
        method: 'PUT',
        headers: { 'content-type': opts.contentType },
        expiresAt,
      };
    },
  };
}
