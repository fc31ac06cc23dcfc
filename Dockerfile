# syntax=docker/dockerfile:1
# posture-daemon: a virtualenv built in one stage and copied into a clean slim Python image.
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" -t posture-daemon .
# Pin the base by digest in your registry mirror: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
# tests/deploy/test_dockerfile.py replays the build stage's steps in a fresh venv and lints this file.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY daemon/ daemon/
# Runtime dependencies only (no extras), every version pinned by constraints.txt; then drop the
# installer from the venv and compile bytecode that stays valid whatever the files' mtimes are
# (the root filesystem is read-only at run time).
RUN python -m venv /opt/posture-daemon \
    && /opt/posture-daemon/bin/python -m pip install --no-cache-dir --constraint constraints.txt . \
    && /opt/posture-daemon/bin/python -m pip uninstall --yes pip setuptools \
    && /opt/posture-daemon/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/posture-daemon/lib

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=""
LABEL org.opencontainers.image.title="posture-daemon" \
      org.opencontainers.image.description="Continuous compliance for AWS serverless and container estates, exported as Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# The base image's own installer is not needed at run time.
RUN python -m pip uninstall --yes pip setuptools wheel
COPY --from=build /opt/posture-daemon /opt/posture-daemon
# Nothing is written outside /tmp: no bytecode, HOME in /tmp (mount a writable /tmp).
ENV PATH=/opt/posture-daemon/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    POSTURE_BUILD_REVISION=${REVISION} \
    POSTURE_LOG__FORMAT=json
WORKDIR /tmp
USER 65532:65532
EXPOSE 9717
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('POSTURE_HTTP__PORT', '9717'), timeout=4)"]
ENTRYPOINT ["posture-daemon", "run"]
