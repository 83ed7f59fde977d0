// The Prometheus tools the ops tests run (Debian's prometheus and prometheus-alertmanager:
// promtool, prometheus, amtool). Absent, those tests skip, unless DOCPIPE_REQUIRE_OPS_TOOLS=1
// (.ci/run sets it after installing them): then they fail.
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export const OPS_TOOLS_REQUIRED = process.env.DOCPIPE_REQUIRE_OPS_TOOLS === '1';

/** The executable's path on PATH, or null. */
export function findTool(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}
