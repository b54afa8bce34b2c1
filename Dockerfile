# wecom-card-worker: one process per container; settings from the environment (README).
#   docker build -t wecom-card-worker .                      the worker (the last stage)
#   docker build --target simulator -t wecom-simulator .    the WeCom stand-in (deploy/compose.yaml)
# Every Python package comes from requirements.lock, checked against its hashes.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY contracts ./contracts
COPY worker ./worker
# The locked setuptools builds the two projects (the contracts package first: the worker
# depends on it); then the venv keeps only what runs.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation ./contracts . \
 && /opt/venv/bin/pip uninstall --yes setuptools pip \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# The simulator shares the worker's dependencies; it never goes into the worker's image.
FROM ${PYTHON_IMAGE} AS simulator
COPY --from=build /opt/venv /opt/venv
COPY simulator /app/simulator
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8081
ENTRYPOINT ["python", "-m", "simulator"]
CMD ["--host", "0.0.0.0", "--port", "8081"]

FROM ${PYTHON_IMAGE} AS worker
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wecom-card-worker" \
      org.opencontainers.image.description="Consumes WeCom template-card update commands from RabbitMQ and calls update_template_card exactly once per response_code." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# A numeric user (Kubernetes runAsNonRoot checks the number) without a home or a shell.
RUN groupadd --gid 10001 worker \
 && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin worker \
 && mkdir /data \
 && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WECOM_STATE_URL=sqlite:////data/wecom-worker-state.sqlite3 \
    WECOM_HTTP_HOST=0.0.0.0 \
    WECOM_HTTP_PORT=8080
USER 10001:10001
# The SQLite state store must live on a volume that outlives the container (one replica);
# several replicas use WECOM_STATE_URL=redis://... (deploy/k8s/base).
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["wecom-card-worker", "run"]
