# syntax=docker/dockerfile:1
# nextbest service image: the image helm/nextbest deploys (image.repository).
#   version=$(python3 -c "import service; print(service.__version__)")
#   docker build -t ghcr.io/nextbest/nextbest:$version .
#   docker run --rm -p 8000:8000 ghcr.io/nextbest/nextbest:$version demo --host 0.0.0.0
# Runs as uid/gid 10001 and works with a read-only root filesystem: it writes only to
# /var/lib/nextbest (data + models; a volume in Kubernetes) and /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtualenv with nextbest and its dependencies --------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (the client's and the `server` extra's), so that a code change does
# not reinstall them.
COPY pyproject.toml README.md ./
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["server"]))
PY
RUN pip install --upgrade pip setuptools wheel && pip install -r /tmp/requirements.txt
COPY service/ service/
COPY features/ features/
COPY training/ training/
COPY load_tests/ load_tests/
RUN pip install --no-deps ".[server]" \
 && python -m compileall -q /opt/venv/lib \
 && nextbest --help >/dev/null

# --- runtime: slim, non-root ------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="nextbest" \
      org.opencontainers.image.description="Open-source next-best-action service" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/nextbest/nextbest"
# libgomp: OpenMP runtime used by scikit-learn's gradient boosting (nextbest train).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 nextbest \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/nextbest --shell /usr/sbin/nologin nextbest \
 && mkdir -p /var/lib/nextbest/data /var/lib/nextbest/models \
 && chown -R 10001:10001 /var/lib/nextbest
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    FEAST_USAGE=False \
    NEXTBEST_DATA_DIR=/var/lib/nextbest/data \
    NEXTBEST_MODELS_DIR=/var/lib/nextbest/models
WORKDIR /var/lib/nextbest
VOLUME ["/var/lib/nextbest"]
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["nextbest"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
