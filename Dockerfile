# One image for the operator and the agent: the CLI subcommand chooses the role
# (`hotstandby operator`, `hotstandby agent`). Node 24 is the project's pinned LTS.
# test/integration/image-layout.test.ts re-enacts these steps without Docker.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="hotstandby-operator" \
      org.opencontainers.image.description="Runs a stateful master as one leader plus hot standbys; operator and agent in one image" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/hotstandby-dev/hotstandby-operator"
WORKDIR /app
ENV NODE_ENV=production
# At most two malloc arenas: each thread (V8's GC helpers, libuv's pool) would
# otherwise get its own, and an idle agent keeps ~7 MB more private memory
# (bench/footprint.ts, docs/footprint.md).
ENV MALLOC_ARENA_MAX=2
COPY package.json package-lock.json ./
# Production dependencies only: no TypeScript, no test tools, no second Node.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY crds ./crds
COPY docs/local-api.openapi.yaml ./docs/local-api.openapi.yaml
USER 10001:10001
# --optimize-for-size: V8 keeps the heap near what is live instead of growing
# it for speed; an idle agent holds 86 MB instead of 105 MB, a reference master
# 63.5 instead of 65.6 (bench/footprint.ts, docs/footprint.md). The agent's hot
# paths keep their optimizing compiler (unlike --lite-mode).
ENTRYPOINT ["node", "--optimize-for-size", "/app/bin/hotstandby.js"]
CMD ["--help"]
