# StorePulse worker image. Same settings as local runs (STOREPULSE_*, KAFKA_BOOTSTRAP, REDIS_URL).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Runtime packages only: requirements-dev.lock (pytest, ruff, mypy...) stays out of the image.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The application; .dockerignore keeps tests/, bench/ and docs/ out.
COPY . .
# the console's charting library, from the npm registry, checked against its pinned integrity
RUN python -m infra.console_assets
RUN useradd --system --uid 10001 --home-dir /app storepulse \
    && mkdir -p /data \
    && chown -R storepulse /data

USER storepulse
ENV PYTHONPATH=/app \
    KAFKA_BOOTSTRAP=kafka:9092 \
    REDIS_URL=redis://redis:6379/0 \
    STOREPULSE_DATA_DIR=/data \
    STOREPULSE_WEB_HOST=0.0.0.0 \
    STOREPULSE_WEB_PORT=6066
VOLUME ["/data"]
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python -c "import json,sys,urllib.request as u; sys.exit(0 if json.load(u.urlopen('http://127.0.0.1:6066/health')).get('ready') else 1)"
CMD ["python", "-m", "cli", "worker"]
