# Production image: web (uvicorn), worker and beat all run from it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TMS_ENV=production STATIC_ROOT=/app/staticfiles TMS_VAR_DIR=/var/lib/tms

RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 tms \
 && mkdir -p /var/lib/tms && chown tms /var/lib/tms

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# collectstatic needs settings to load; these throwaway values never reach a running container.
RUN SECRET_KEY=build-only FIELD_ENCRYPTION_KEYS=build-only ALLOWED_HOSTS=build \
    python manage.py collectstatic --no-input -v0

USER tms
EXPOSE 8000
CMD ["uvicorn", "test_management_system.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--proxy-headers"]
