// The Transform every Storage.put streams its body through: it counts and hashes the bytes and
// enforces PutOptions (`maxBytes`, and `size`, the exact length a caller declared), so every
// adapter accepts and refuses the same bodies.
import { createHash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { ObjectTooLargeError, type PutOptions } from '../types.ts';

/** The body is not as long as the `size` its caller declared (a caller's bug, never retried). */
export class BodyLengthError extends Error {
  readonly code = 'STORAGE_BODY_LENGTH_MISMATCH';
  constructor(declared: number, actual: string) {
    super(`the body has ${actual} bytes, ${declared} were declared`);
    this.name = 'BodyLengthError';
  }
}

export interface PutMeter {
  readonly stream: Transform;
  /** Bytes seen so far. */
  readonly size: number;
  /** The error the meter itself raised (too large, wrong length), if any. */
  readonly failure: Error | undefined;
  /** The SHA-256 of the whole body, once the stream has ended. */
  sha256(): string;
}

/**
 * Throws before any byte moves when the options contradict themselves or the limit; the body is
 * then destroyed (it would otherwise stay open, unread, with its socket or file).
 */
export function createPutMeter(options: PutOptions, body?: Readable | AsyncIterable<Uint8Array>): PutMeter {
  try {
    return meter(options);
  } catch (err) {
    if (body instanceof Readable) body.destroy();
    throw err;
  }
}

function meter(options: PutOptions): PutMeter {
  const { maxBytes, size: declared } = options;
  if (declared !== undefined) {
    if (!Number.isSafeInteger(declared) || declared < 0) throw new RangeError(`put size must be a non-negative integer, got ${declared}`);
    if (maxBytes !== undefined && declared > maxBytes) throw new ObjectTooLargeError(maxBytes);
  }
  const hash = createHash('sha256');
  let size = 0;
  let failure: Error | undefined;
  const fail = (err: Error, callback: TransformCallback) => {
    failure = err;
    callback(err);
  };
  const stream = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      size += chunk.length;
      if (maxBytes !== undefined && size > maxBytes) return fail(new ObjectTooLargeError(maxBytes), callback);
      if (declared !== undefined && size > declared) return fail(new BodyLengthError(declared, `more than ${declared}`), callback);
      hash.update(chunk);
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      if (declared !== undefined && size !== declared) return fail(new BodyLengthError(declared, String(size)), callback);
      callback();
    },
  });
  return {
    stream,
    get size() {
      return size;
    },
    get failure() {
      return failure;
    },
    sha256: () => hash.digest('hex'),
  };
}
