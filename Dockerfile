# knm image: one image for workers, beat and the CLI (docker-compose.yml runs it).
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/knm/.venv \
    PATH=/opt/knm/.venv/bin:$PATH

RUN pip install --no-cache-dir uv && useradd --create-home --uid 10001 knm
WORKDIR /opt/knm

COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY config ./config
COPY knm ./knm
COPY carriers ./carriers
COPY tasks ./tasks
COPY workers ./workers
RUN uv sync --frozen --no-dev && mkdir -p /var/lib/knm && chown knm /var/lib/knm

USER knm
ENV KNM_DATA_DIR=/var/lib/knm
ENTRYPOINT ["knm"]
CMD ["worker"]
