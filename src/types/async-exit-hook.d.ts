// async-exit-hook ships no types; docpipe only uses unhookEvent (see src/db/embedded.ts).
declare module 'async-exit-hook' {
  const hook: { unhookEvent(event: string): void };
  export default hook;
}
