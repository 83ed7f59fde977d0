// Admin routes, for the service role only (Supabase's `service_role` key: the backend, never a
// browser): the audit log, newest first, with filters and id-cursor pagination.
import { Type } from 'typebox';
import type { FastifyRequest } from 'fastify';
import type { Sql } from '../../db/client.ts';
import { queryAudit } from '../../security/audit.ts';
import type { Principal } from '../../security/tokens.ts';
import { HttpError } from '../errors.ts';
import type { App } from '../http.ts';
import { ErrorBody } from './schemas.ts';

const AuditQuery = Type.Object(
  {
    actor: Type.Optional(Type.String({ maxLength: 300 })),
    action: Type.Optional(Type.String({ maxLength: 100 })),
    outcome: Type.Optional(Type.Union(['success', 'denied', 'refused', 'flagged', 'blocked', 'failed'].map((o) => Type.Literal(o)))),
    target: Type.Optional(Type.String({ maxLength: 300 })),
    since: Type.Optional(Type.String({ format: 'date-time' })),
    until: Type.Optional(Type.String({ format: 'date-time' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    /** The previous page's `nextBefore`. */
    before: Type.Optional(Type.String({ pattern: '^[0-9]{1,19}$' })),
  },
  { additionalProperties: false },
);

const Nullable = (t: ReturnType<typeof Type.String>) => Type.Union([t, Type.Null()]);
const AuditEntryView = Type.Object({
  id: Type.String(),
  at: Type.String({ format: 'date-time' }),
  actor: Type.String(),
  role: Nullable(Type.String()),
  action: Type.String(),
  target: Nullable(Type.String()),
  outcome: Type.String(),
  clientAddress: Nullable(Type.String()),
  userAgent: Nullable(Type.String()),
  requestId: Nullable(Type.String()),
  occurrences: Type.Integer(),
  details: Type.Record(Type.String(), Type.Unknown()),
});
const AuditPage = Type.Object({ entries: Type.Array(AuditEntryView), nextBefore: Nullable(Type.String()) });

export function registerAdminRoutes(app: App, options: { sql: Sql; principal(request: unknown): Principal }): void {
  app.get('/v1/admin/audit', {
    schema: {
      querystring: AuditQuery,
      response: { 200: AuditPage, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 429: ErrorBody },
    },
  }, async (request: FastifyRequest<{ Querystring: { actor?: string; action?: string; outcome?: string; target?: string; since?: string; until?: string; limit?: number; before?: string } }>) => {
    const principal = options.principal(request);
    if (principal.role !== 'service_role') throw new HttpError(403, 'ADMIN_ONLY', 'the admin routes are for the service role');
    const q = request.query;
    const limit = q.limit ?? 100;
    const rows = await queryAudit(options.sql, {
      actor: q.actor,
      action: q.action,
      outcome: q.outcome,
      target: q.target,
      since: q.since ? new Date(q.since) : undefined,
      until: q.until ? new Date(q.until) : undefined,
      before: q.before,
      limit,
    });
    return {
      entries: rows.map((r) => ({
        id: r.id,
        at: r.at.toISOString(),
        actor: r.actor,
        role: r.role,
        action: r.action,
        target: r.target,
        outcome: r.outcome,
        clientAddress: r.client_address,
        userAgent: r.user_agent,
        requestId: r.request_id,
        occurrences: r.occurrences,
        details: r.details,
      })),
      nextBefore: rows.length === limit ? rows.at(-1)!.id : null,
    };
  });
}
