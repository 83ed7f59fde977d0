// GET /v1/usage: the caller's usage (the token's sub is the owner), day by day over a range of
// UTC days, with totals and an estimated cost at the deployment's prices. Read from
// docpipe.usage_daily (src/projections/usage.ts); operators see every owner with `docpipe usage`.
import type { FastifyError } from 'fastify';
import { Type } from 'typebox';
import type { Sql } from '../../db/client.ts';
import { costNote, estimateCostDollars, usageRange, UsageRangeError, USAGE_MAX_DAYS, type CostSettings } from '../../documents/usage.ts';
import { queryUsage } from '../../projections/usage.ts';
import type { Principal } from '../../security/tokens.ts';
import { HttpError } from '../errors.ts';
import type { App } from '../http.ts';
import { ErrorBody } from './schemas.ts';

export interface UsageRoutesOptions {
  sql: Sql;
  /** The deployment's parser, embedder and prices (costSettings(config)). */
  cost: CostSettings;
  principal(request: unknown): Principal;
}

const Day = (description: string) => Type.String({ format: 'date', maxLength: 10, description });

export const UsageQuery = Type.Object(
  {
    from: Type.Optional(Day('First day (UTC, YYYY-MM-DD), included; default: 29 days before `to`')),
    to: Type.Optional(Day('Last day (UTC, YYYY-MM-DD), included; default: today')),
  },
  { additionalProperties: false },
);

const Counts = {
  documents: Type.Integer({ description: 'documents uploaded' }),
  bytes: Type.Integer({ description: 'bytes of the documents uploaded' }),
  pages: Type.Integer({ description: 'pages parsed (each run of a reprocessed document counts)' }),
  tokens: Type.Integer({ description: 'tokens chunked for the embedder' }),
};

export const UsageReportView = Type.Object({
  ownerId: Type.String(),
  from: Type.String({ format: 'date' }),
  to: Type.String({ format: 'date' }),
  /** The days with any usage, oldest first. */
  days: Type.Array(Type.Object({ day: Type.String({ format: 'date' }), ...Counts })),
  totals: Type.Object(Counts),
  estimatedCost: Type.Object({
    parserDollars: Type.Number(),
    embedderDollars: Type.Number(),
    totalDollars: Type.Number(),
    currency: Type.Literal('USD'),
    note: Type.String(),
  }),
});

const invalidRange = (message: string) => new HttpError(400, 'INVALID_DATE_RANGE', message);

export function registerUsageRoutes(app: App, options: UsageRoutesOptions): void {
  app.get('/v1/usage', {
    // The handler turns a refused query into INVALID_DATE_RANGE.
    attachValidation: true,
    schema: {
      description: `The caller's usage per UTC day (days with any usage), its totals and their estimated cost. At most ${USAGE_MAX_DAYS} days; default: the last 30.`,
      querystring: UsageQuery,
      response: { 200: UsageReportView, 400: ErrorBody },
    },
  }, async (request) => {
    const principal = options.principal(request);
    const invalid = request.validationError as FastifyError | undefined;
    if (invalid) {
      // A malformed from or to is INVALID_DATE_RANGE; anything else (a parameter the route does
      // not take) stays the API's VALIDATION_ERROR.
      const field = invalid.validation?.[0]?.instancePath;
      if (field === '/from' || field === '/to') throw invalidRange(`${field.slice(1)} must be a date as YYYY-MM-DD`);
      throw invalid;
    }
    let range: { from: string; to: string };
    try {
      range = usageRange(request.query);
    } catch (err) {
      if (err instanceof UsageRangeError) throw invalidRange(err.message);
      throw err;
    }
    const report = await queryUsage(options.sql, { ownerId: principal.sub, ...range });
    return {
      ownerId: principal.sub,
      ...range,
      days: report.days,
      totals: report.totals,
      estimatedCost: { ...estimateCostDollars(report.totals, options.cost), currency: 'USD' as const, note: costNote(options.cost) },
    };
  });
}
