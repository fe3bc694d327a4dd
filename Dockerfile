# Multi-stage build: dependencies are installed in a builder stage; the runtime image holds only
# the virtual environment and the code, and runs as a non-root user.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/flywheel
COPY pyproject.toml README.md ./
COPY app ./app
COPY ingest ./ingest
COPY store ./store
COPY analytics ./analytics
COPY evals ./evals
COPY sample_data ./sample_data
RUN /opt/flywheel/bin/pip install --upgrade pip && /opt/flywheel/bin/pip install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 flywheel && mkdir -p /data && chown flywheel /data
COPY --from=builder /opt/flywheel /opt/flywheel
ENV PATH=/opt/flywheel/bin:$PATH \
    FLYWHEEL_DATA_DIR=/data \
    FLYWHEEL_DASHBOARD_HOST=0.0.0.0 \
    HF_HUB_OFFLINE=1 \
    OMP_NUM_THREADS=1
USER flywheel
VOLUME ["/data"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status == 200 else 1)"
CMD ["flywheel", "dashboard"]
