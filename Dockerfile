# One image for web, worker and beat; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY drip ./drip
COPY workers ./workers
# Before the install: the wheel ships them too (setup.py), as the defaults of an installed drip.
COPY content ./content
COPY templates ./templates
RUN pip install --no-cache-dir .
ENV DRIP_CONTENT_DIR=/app/content/lessons DRIP_TEMPLATES_DIR=/app/templates
USER nobody
