# One image for web, worker and beat; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY drip ./drip
COPY workers ./workers
RUN pip install --no-cache-dir .
COPY content ./content
COPY templates ./templates
ENV DRIP_CONTENT_DIR=/app/content/lessons DRIP_TEMPLATES_DIR=/app/templates
USER nobody
