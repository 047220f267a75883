# One image for workers, Flower and the CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY tasks ./tasks
COPY config ./config
RUN pip install --no-cache-dir . && useradd --create-home chordflow && mkdir -p /data/artifacts && chown chordflow /data/artifacts
USER chordflow
ENV CHORDFLOW_ARTIFACT_ROOT=/data/artifacts
ENTRYPOINT ["chordflow"]
CMD ["worker"]
