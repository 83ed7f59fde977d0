// A sandbox child for the pool's own tests (test/integration/sandbox.test.ts): tasks that
// misbehave on purpose, spoken over the same protocol as src/providers/sandbox/child.ts.
import type { SandboxReply, SandboxRequest } from '../../src/providers/sandbox/pool.ts';
import { serializeError } from '../../src/providers/sandbox/tasks.ts';

export type TestTask =
  | { kind: 'echo'; value: unknown }
  | { kind: 'env' }
  | { kind: 'pid' }
  | { kind: 'sleep'; ms: number }
  | { kind: 'spin' }
  | { kind: 'external'; mb: number; holdMs: number }
  | { kind: 'heap' }
  | { kind: 'recurse' }
  | { kind: 'exit'; code: number }
  | { kind: 'throw'; name: string; message: string };

const kept: unknown[] = [];

function recurse(n: number): number {
  return n === 0 ? 0 : 1 + recurse(n + 1);
}

async function run(task: TestTask): Promise<unknown> {
  switch (task.kind) {
    case 'echo':
      return task.value;
    case 'env':
      return Object.keys(process.env);
    case 'pid':
      return process.pid;
    case 'sleep':
      await new Promise((resolve) => setTimeout(resolve, task.ms));
      return 'slept';
    case 'spin':
      for (;;) {
        // a synchronous loop: only the parent can end it
      }
    case 'external': {
      // ArrayBuffers live outside the V8 heap: only the resident-set watchdog sees them.
      for (let i = 0; i < task.mb; i++) kept.push(Buffer.alloc(1024 * 1024, 1));
      await new Promise((resolve) => setTimeout(resolve, task.holdMs));
      return kept.length;
    }
    case 'heap': {
      const strings: string[] = [];
      for (let i = 0; ; i++) strings.push(`${i}`.repeat(64) + i);
    }
    case 'recurse':
      return recurse(1);
    case 'exit':
      process.exit(task.code);
    case 'throw': {
      const err = new Error(task.message);
      err.name = task.name;
      throw err;
    }
  }
}

process.on('disconnect', () => process.exit(0));
process.on('message', (request: SandboxRequest) => {
  void run(request.task as TestTask).then(
    (result) => process.send?.({ id: request.id, ok: true, result } satisfies SandboxReply),
    (err: unknown) => process.send?.({ id: request.id, ok: false, error: serializeError(err) } satisfies SandboxReply),
  );
});

// Modules are loaded: the pool starts the clock of a task from here.
process.send?.({ ready: true } satisfies SandboxReply);
