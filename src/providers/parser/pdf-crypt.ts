// The decryption side of PDF's standard security handler, for the stream scan alone: an
// encrypted file's streams are ciphertext, and measuring what they inflate to means decrypting
// them first. pdf.js opens an encrypted file only when the empty user password opens it (the
// common "protected" PDF: an owner password restricts printing or copying), so that is the one
// password tried here, with pdf.js's own key derivation (revisions 2 to 6: RC4, AES-128,
// AES-256). Whatever else (another password, an unknown handler) gets no decryptor: the scan
// then counts worst cases instead.
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';

export type Chunks = AsyncIterable<Uint8Array>;
/** Decrypts one object's stream, chunk by chunk. */
export type StreamCipher = (input: Chunks) => Chunks;

/** The /Encrypt dictionary's entries the standard handler needs, read by the scan. */
export interface StandardSecurity {
  filter: string | null;
  v: number;
  r: number;
  /** Key length in bits (/Length, or the stream crypt filter's for V4 and V5). */
  lengthBits: number | null;
  o: Uint8Array;
  u: Uint8Array;
  ue: Uint8Array | null;
  p: number;
  encryptMetadata: boolean;
  /** V4 and V5: the method of the crypt filter /StmF names (None, V2, AESV2, AESV3); null for Identity. */
  streamMethod: string | null;
  /** The first element of the trailer's /ID. */
  id0: Uint8Array;
}

const PAD = Buffer.from('28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a', 'hex');

/**
 * Per-object stream decryption (null: the object's streams are not encrypted), or null when
 * the empty user password does not open the file or the handler is not one pdf.js supports.
 */
export function emptyPasswordDecryptor(sec: StandardSecurity): ((num: number, gen: number) => StreamCipher | null) | null {
  if (sec.filter !== 'Standard' || ![1, 2, 4, 5].includes(sec.v)) return null;
  let method: string | null;
  if (sec.v === 4 || sec.v === 5) method = sec.streamMethod;
  else method = 'V2';
  if (sec.v === 5) {
    const key = aes256UserKey(sec);
    if (!key) return null;
    if (method !== 'AESV3') return method === null || method === 'None' ? () => null : null;
    return () => aesStream(key);
  }
  let bits = sec.lengthBits ?? (sec.v <= 3 ? 40 : 128);
  if (bits < 40) bits <<= 3; // some writers give the length in bytes
  if (bits % 8 !== 0 || bits > 128) return null;
  const key = rc4UserKey(sec, bits / 8);
  if (!key) return null;
  // pdf.js pads a V4 key shorter than 16 bytes with zeros.
  const fileKey = sec.v === 4 && key.length < 16 ? Buffer.concat([key, Buffer.alloc(16 - key.length)]) : key;
  if (method === null || method === 'None') return () => null;
  if (method !== 'V2' && method !== 'AESV2') return null;
  const aes = method === 'AESV2';
  return (num, gen) => {
    const objectKey = md5(fileKey, Buffer.from([num & 0xff, (num >> 8) & 0xff, (num >> 16) & 0xff, gen & 0xff, (gen >> 8) & 0xff]), aes ? Buffer.from('sAlT') : Buffer.alloc(0));
    const k = objectKey.subarray(0, Math.min(fileKey.length + 5, 16));
    return aes ? aesStream(k) : rc4Stream(k);
  };
}

/** Algorithm 2 (revisions 2 to 4) with the empty password, checked against /U as pdf.js does. */
function rc4UserKey(sec: StandardSecurity, length: number): Buffer | null {
  const p = Buffer.alloc(4);
  p.writeInt32LE(sec.p | 0);
  const noMetadata = sec.r >= 4 && !sec.encryptMetadata ? Buffer.from([0xff, 0xff, 0xff, 0xff]) : Buffer.alloc(0);
  let hash = md5(PAD, sec.o.subarray(0, 32), p, sec.id0, noMetadata);
  if (sec.r >= 3) for (let i = 0; i < 50; i++) hash = md5(hash.subarray(0, length));
  const key = hash.subarray(0, length);
  let check: Buffer;
  if (sec.r >= 3) {
    check = rc4(key, md5(PAD, sec.id0));
    for (let i = 1; i <= 19; i++) check = rc4(key.map((b) => b ^ i), check);
  } else {
    check = rc4(key, PAD);
  }
  return check.every((b, i) => sec.u[i] === b) ? key : null;
}

/** Revisions 5 and 6: the empty password's hash checked against /U, then /UE decrypted. */
function aes256UserKey(sec: StandardSecurity): Buffer | null {
  if (sec.u.length < 48 || !sec.ue || sec.ue.length < 32) return null;
  const hash = sec.r === 6 ? hashR6 : (input: Buffer) => createHash('sha256').update(input).digest();
  const validation = hash(Buffer.from(sec.u.subarray(32, 40)));
  if (!validation.subarray(0, 32).equals(Buffer.from(sec.u.subarray(0, 32)))) return null;
  const intermediate = hash(Buffer.from(sec.u.subarray(40, 48)));
  const decipher = createDecipheriv('aes-256-cbc', intermediate.subarray(0, 32), Buffer.alloc(16));
  decipher.setAutoPadding(false);
  return Buffer.concat([decipher.update(sec.ue.subarray(0, 32)), decipher.final()]);
}

/** ISO 32000-2 algorithm 2.B with an empty password and no user data, as pdf.js's PDF20 hash. */
function hashR6(input: Buffer): Buffer {
  let k = createHash('sha256').update(input).digest().subarray(0, 32);
  let e: Buffer = Buffer.alloc(1);
  for (let round = 0; round < 64 || e.at(-1)! > round - 32; round++) {
    const k1 = Buffer.concat(new Array<Buffer>(64).fill(k));
    const cipher = createCipheriv('aes-128-cbc', k.subarray(0, 16), k.subarray(16, 32));
    cipher.setAutoPadding(false);
    e = Buffer.concat([cipher.update(k1), cipher.final()]);
    let sum = 0;
    for (let i = 0; i < 16; i++) sum += e[i]!;
    k = createHash(['sha256', 'sha384', 'sha512'][sum % 3]!).update(e).digest();
  }
  return k.subarray(0, 32);
}

function md5(...parts: Uint8Array[]): Buffer {
  const hash = createHash('md5');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

function rc4Init(key: Uint8Array): Uint8Array {
  const s = Uint8Array.from({ length: 256 }, (_, i) => i);
  for (let i = 0, j = 0; i < 256; i++) {
    j = (j + s[i]! + key[i % key.length]!) & 0xff;
    const t = s[i]!;
    s[i] = s[j]!;
    s[j] = t;
  }
  return s;
}

function rc4(key: Uint8Array, data: Uint8Array): Buffer {
  const out = Buffer.alloc(data.length);
  rc4Apply(rc4Init(key), { i: 0, j: 0 }, data, out);
  return out;
}

function rc4Apply(s: Uint8Array, state: { i: number; j: number }, data: Uint8Array, out: Uint8Array): void {
  let { i, j } = state;
  for (let k = 0; k < data.length; k++) {
    i = (i + 1) & 0xff;
    j = (j + s[i]!) & 0xff;
    const t = s[i]!;
    s[i] = s[j]!;
    s[j] = t;
    out[k] = data[k]! ^ s[(s[i]! + s[j]!) & 0xff]!;
  }
  state.i = i;
  state.j = j;
}

function rc4Stream(key: Uint8Array): StreamCipher {
  return async function* (input) {
    const s = rc4Init(key);
    const state = { i: 0, j: 0 };
    for await (const chunk of input) {
      const out = new Uint8Array(chunk.length);
      rc4Apply(s, state, chunk, out);
      yield out;
    }
  };
}

/** AES-CBC with the IV in the first 16 bytes, as PDF stores it; padding is left to the filters. */
function aesStream(key: Uint8Array): StreamCipher {
  return async function* (input) {
    let iv: Buffer = Buffer.alloc(0);
    let decipher: ReturnType<typeof createDecipheriv> | null = null;
    for await (const chunk of input) {
      let data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      if (!decipher) {
        const need = 16 - iv.length;
        iv = Buffer.concat([iv, data.subarray(0, need)]);
        data = data.subarray(need);
        if (iv.length < 16) continue;
        decipher = createDecipheriv(key.length === 32 ? 'aes-256-cbc' : 'aes-128-cbc', key, iv);
        decipher.setAutoPadding(false);
      }
      if (data.length > 0) yield decipher.update(data);
    }
    // A ragged last block (no multiple of 16) is dropped, as pdf.js drops it.
  };
}
