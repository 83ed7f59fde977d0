# One image for the three Fly apps (fly.api.toml, fly.worker.toml, fly.webhook.toml): each app
# picks its command (api, worker, webhook), and the API app's release command is `migrate`.
#
#   docker build -t docpipe .
#   docker run --rm -e DATABASE_URL=... -e JWT_SECRET=... docpipe            # the API
#   docker run --rm -e DATABASE_URL=... -e JWT_SECRET=... docpipe worker
#
# The runtime stage holds dist/ and a production install only (--omit=dev --omit=optional): no
# tsx, TypeScript, test tools, pinned `node` package or embedded PostgreSQL, so DATABASE_URL is
# required. `npm run test:container` builds this file and runs the three services from it.

# The base image, pinnable by digest: --build-arg NODE_IMAGE=node:24-slim@sha256:...
ARG NODE_IMAGE=node:24-slim

# Production dependencies alone, so that the runtime stage copies node_modules without npm's
# cache. No dependency in this set has an install script. Type declarations and source maps are
# never loaded at run time: dropping them takes about a third off these layers.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.[cm]ts' -o -name '*.js.map' -o -name '*.[cm]js.map' -o -name '*.ts.map' \) -delete

# The build needs TypeScript and @types/node only: no install scripts (the pinned `node` package
# would download a second Node) and no optional packages (embedded PostgreSQL). scripts/build.ts
# runs on the image's Node 24, which strips its types itself; it compiles src/ to dist/ and
# copies the SQL migrations beside the code.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=optional --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.ts scripts/
COPY src src
RUN node scripts/build.ts

FROM ${NODE_IMAGE}
# HOST: `::` so that Fly's proxy and its private network (IPv6) reach the servers (dual-stack:
# IPv4 too); the code's default, 127.0.0.1, is unreachable from outside the container.
# DOCPIPE_DATA_DIR: a directory the `node` user may write (fs storage, when not on Supabase);
# /app stays read-only for it.
ENV NODE_ENV=production \
    HOST=:: \
    DOCPIPE_DATA_DIR=/data
WORKDIR /app
RUN mkdir /data && chown node:node /data
# package.json carries "type": "module", which the compiled code needs.
COPY package.json ./
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
USER node
# The services' default ports (API_PORT, WEBHOOK_PORT, WORKER_PORT); each Fly app uses one.
EXPOSE 3000 3001 3002
# Node is PID 1 and handles SIGTERM itself: it drains within SHUTDOWN_TIMEOUT_MS and exits 0.
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["api"]
