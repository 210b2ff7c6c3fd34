# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target operator -t its-operator:0.1.0 .
#   docker build --target runtime  -t its-runtime:0.1.0  .
# Every base image and Python package is pinned; both images run as a non-root user
# with a read-only root filesystem in mind (writable paths are volumes).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------
# Build the project wheel once; both targets install it with their own extras.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2.post1
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY runtime/ runtime/
COPY devenv/ devenv/
RUN python -m build --wheel --outdir /dist .

# ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=wheel /dist/*.whl /tmp/
RUN pip install --no-cache-dir "$(ls /tmp/its_camera_analytics-*.whl)[operator]" \
    && rm -f /tmp/*.whl
USER 65532:65532
EXPOSE 8090 8091
# The same command line manifests/base/operator.yaml uses.
ENTRYPOINT ["its-operator"]
CMD ["--all-namespaces", "--liveness-port", "8090", "--metrics-port", "8091"]

# ---------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    TORCHINDUCTOR_CACHE_DIR=/var/cache/its/engines/inductor
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip ffmpeg g++ \
    && rm -rf /var/lib/apt/lists/*
RUN pip3 install --no-cache-dir torch==2.14.1 torchvision==0.29.2 torch-tensorrt==2.14.0 \
    nvidia-ml-py==13.615.71
COPY --from=wheel /dist/*.whl /tmp/
RUN pip3 install --no-cache-dir "$(ls /tmp/its_camera_analytics-*.whl)[runtime,gpu]" \
    && rm -f /tmp/*.whl
RUN mkdir -p /var/cache/its/engines /var/lib/its/journal /models \
    && chown -R 65532:65532 /var/cache/its /var/lib/its
USER 65532:65532
VOLUME ["/var/cache/its/engines", "/models"]
EXPOSE 8080
# The same command line the operator's Deployment builder renders.
ENTRYPOINT ["its-runtime"]
CMD ["--config", "/etc/its/runtime.yaml"]
