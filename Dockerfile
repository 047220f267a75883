# One image for workers, Flower and the CLI. Dependencies come from the hash-checked lock (make lock).
FROM python:3.11-slim
WORKDIR /app
COPY requirements/runtime.lock ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY tasks ./tasks
COPY config ./config
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && useradd --create-home chordflow && mkdir -p /data/artifacts && chown chordflow /data/artifacts
USER chordflow
ENV CHORDFLOW_ARTIFACT_ROOT=/data/artifacts
ENTRYPOINT ["chordflow"]
CMD ["worker"]
