// Imported first by the sandbox child (child.ts), so that it runs before the parsers' modules
// load (ESM evaluates imports in order): the parent decides when a child ends (it kills it),
// and a Ctrl-C meant for the parent, which the terminal sends to the whole process group, must
// not kill a child mid-task (failing its document) or while it is still loading. A parent that
// dies closes the IPC channel instead, and the child exits.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});
process.on('disconnect', () => process.exit(0));
