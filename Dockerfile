# The tokenpulse services (probe, worker, sink) for compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY producers producers
COPY streams streams
COPY sinks sinks
COPY stack stack
COPY tokenpulse tokenpulse
RUN pip install --no-cache-dir . && useradd --create-home tokenpulse
USER tokenpulse
ENTRYPOINT ["tokenpulse"]
