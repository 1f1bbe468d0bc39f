# The pilot image that charts/pilot runs.
#
#   docker build -t pilot:0.1.0 .
#
# Two stages on the same base: the builder turns the source into a wheel and installs it with its
# dependencies into a virtual environment at /opt/pilot; the runtime stage copies only that environment.
# Every dependency ships manylinux wheels, so neither stage needs a compiler.
#
# The base is pinned to a Python patch release and Debian release. To pin it to a digest as well, pass
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
# (the digest of the tag as your registry serves it, e.g. from `docker buildx imagetools inspect`).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the wheel is built from: editing tests or docs does not invalidate this layer.
COPY pyproject.toml README.md ./
COPY pilot ./pilot

# The venv has no pip of its own (the builder's pip installs into it), so pilot's environment carries no
# installer. pip compiles the bytecode here, as the runtime root filesystem is read-only. The last command
# checks that the console script starts.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/pilot \
 && python -m pip --python /opt/pilot/bin/python install /wheels/pilot-*.whl \
 && /opt/pilot/bin/pilot --help > /dev/null


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="pilot" \
      org.opencontainers.image.description="Istio-compatible xDS control plane (a Python re-implementation of Istio's Pilot)" \
      org.opencontainers.image.licenses="Apache-2.0"

# UID/GID 1337 as istiod's image and the chart's securityContext (runAsUser: 1337).
RUN groupadd --gid 1337 pilot \
 && useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pilot

COPY --from=builder /opt/pilot /opt/pilot

ENV PATH=/opt/pilot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 1337:1337

# 15010 xDS gRPC, 15014 monitoring HTTP (/ready, /metrics, /debug), 15017 validating webhook HTTPS.
EXPOSE 15010 15014 15017

ENTRYPOINT ["pilot"]
CMD ["serve"]
