# The Daypass operator image: `daypass run` on Python 3.11, as an unprivileged numeric user.
#
#   docker build -t ghcr.io/daypass/daypass:0.1.0 .
#
# Dependencies come from deploy/requirements.lock, exact versions only; the package itself is
# installed without resolving anything further. For reproducible builds, pin the base image
# by digest: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/daypass
COPY deploy/requirements.lock /src/deploy/requirements.lock
RUN /opt/daypass/bin/pip install --no-deps --requirement /src/deploy/requirements.lock
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/daypass/bin/pip install --no-deps /src \
    && /opt/daypass/bin/pip check \
    && /opt/daypass/bin/python -m compileall -q /opt/daypass

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="daypass" \
      org.opencontainers.image.description="Just-in-time, time-boxed Kubernetes access" \
      org.opencontainers.image.source="https://github.com/daypass/daypass" \
      org.opencontainers.image.licenses="Apache-2.0"
# The virtual environment's interpreter links to the base image's, identical in both stages.
COPY --from=build /opt/daypass /opt/daypass
ENV PATH=/opt/daypass/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# No entry in /etc/passwd is needed: Kubernetes and the operator only use the numbers.
USER 65532:65532
EXPOSE 8080 9090 8443
ENTRYPOINT ["daypass"]
CMD ["run"]
