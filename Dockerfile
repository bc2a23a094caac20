# d2v serve on a GPU: CUDA runtime base, PyTorch (CUDA build) and onnxruntime-gpu, non-root user,
# models mounted as a volume at /app/models. Build and run: see README "Running with Docker".
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# the CUDA build of the pinned torch first, so that installing d2v keeps it; the same CUDA version as
# CUDA_IMAGE and as the README's GPU install
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY d2v ./d2v
RUN pip install --no-cache-dir ".[server,export]" \
    && pip uninstall -y onnxruntime \
    && pip install --no-cache-dir "onnxruntime-gpu>=1.18"

FROM ${CUDA_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system d2v && useradd --system --gid d2v --create-home --home-dir /home/d2v d2v
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app
RUN mkdir -p /app/models && chown d2v:d2v /app/models
VOLUME ["/app/models"]
USER d2v
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=15s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=12)"]
# with no --model, d2v serve serves every model directory under ./models (the mounted volume)
ENTRYPOINT ["d2v", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD []
