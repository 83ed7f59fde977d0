// What a fly.<service>.toml's leading comment tells the operator to set with `fly secrets set`:
// the configuration variables it names. Shared by the deploy-config check and the fly-setup test.
import { SPEC } from '../../src/config.ts';

const SPEC_NAMES = new Set(SPEC.map((s) => s.name));

/** The configuration variables named in a toml's leading comment (the secrets to set). */
export function documentedSecrets(text: string): Set<string> {
  const header: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('#')) break;
    header.push(line);
  }
  return new Set([...header.join('\n').matchAll(/\b[A-Z][A-Z0-9_]+\b/g)].map((m) => m[0]).filter((n) => SPEC_NAMES.has(n)));
}
