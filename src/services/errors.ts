// Errors with a stable code and an HTTP status, thrown by route handlers and rendered by the
// shared error handler as {"error":{"code","message","requestId"}}.

export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export const notFound = (what = 'document') => new HttpError(404, 'NOT_FOUND', `${what} not found`);
