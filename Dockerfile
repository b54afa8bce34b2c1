# wecom-card-worker: one process per container; settings from the environment (README).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY contracts ./contracts
COPY worker ./worker
COPY simulator ./simulator
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels ./contracts '.[fast]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 worker \
 && mkdir /data && chown worker /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER worker
# The SQLite state store must live on a volume that outlives the container (single replica);
# use WECOM_STATE_URL=redis://... for several replicas.
VOLUME ["/data"]
ENV WECOM_STATE_URL=sqlite:////data/wecom-worker-state.sqlite3 \
    WECOM_HTTP_HOST=0.0.0.0 \
    WECOM_HTTP_PORT=8080 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["wecom-card-worker"]
CMD ["run"]
