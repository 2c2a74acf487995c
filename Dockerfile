# One image recipe for every socialrx service; build arguments name the service and its port.
# Build from the repository root (the workspace and its lock file):
#   docker build --build-arg SERVICE=directory --build-arg PORT=8002 -t socialrx/directory .
# SERVICE is one of referral-intake (8001), directory (8002), outcomes (8003), funding-ledger (8004), web (8000).
ARG SERVICE
ARG PORT

FROM python:3.11-slim AS build
ARG SERVICE
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY shared shared
COPY services services
COPY deploy/ops deploy/ops
COPY tests/harness/pyproject.toml tests/harness/pyproject.toml
COPY bench/pyproject.toml bench/pyproject.toml
# Only this service, the operators' CLI (`socialrx dlq ...`, `socialrx token`) and what they need, at the
# versions in uv.lock; installed, not editable. The harness and the benchmark are workspace members uv must
# see (their pyproject.toml), never installed.
RUN test -n "$SERVICE" || (echo "build with --build-arg SERVICE=<service>" >&2; exit 1)
RUN uv sync --frozen --no-dev --no-editable --package "socialrx-$SERVICE" --package socialrx-ops
# The service's console script under one fixed name, so CMD stays exec-form (signals reach Python).
RUN test -x "/app/.venv/bin/socialrx-$SERVICE" && ln -s "socialrx-$SERVICE" /app/.venv/bin/socialrx-service

FROM python:3.11-slim
ARG SERVICE
ARG PORT
RUN test -n "$PORT" || (echo "build with --build-arg PORT=<the service's port>" >&2; exit 1)
RUN useradd --system --uid 10001 --no-create-home socialrx
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 SOCIALRX_SERVICE=${SERVICE} SOCIALRX_HTTP_HOST=0.0.0.0 \
    SOCIALRX_HTTP_PORT=${PORT}
USER socialrx
EXPOSE ${PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"SOCIALRX_HTTP_PORT\"]}/healthz', timeout=3)"]
CMD ["socialrx-service"]
