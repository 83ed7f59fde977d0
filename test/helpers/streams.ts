// Stream helpers shared by the storage tests.

/** `data` as an async iterable of `size`-byte chunks, yielding to the event loop between them. */
export async function* chunked(data: Buffer, size: number): AsyncIterable<Uint8Array> {
  for (let i = 0; i < data.length; i += size) {
    yield data.subarray(i, i + size);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
