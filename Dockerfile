# seedbed in a container: the same lock file, the same environment variables, every run.
#
#   docker build -t seedbed .
#   docker run --rm -v "$PWD/outputs:/app/outputs" seedbed python train.py seed=42
#   docker run --rm -v "$PWD/outputs:/app/outputs" seedbed python eval.py ckpt=outputs/train/<run>/checkpoints/last.pt
#   docker run --rm -v "$PWD/outputs:/app/outputs" seedbed seedbed-verify --against outputs/train/<run>
#
# CPU by default. For a GPU image, pick a CUDA base with Python 3.11+ available or
# installable (Ubuntu 24.04 ships 3.12), e.g.:
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 -t seedbed:cuda .
#   docker run --rm --gpus all -v "$PWD/outputs:/app/outputs" seedbed:cuda python train.py
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Results depend on these: fixed here so that every container run records the same values.
ENV PYTHONHASHSEED=0 \
    CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python images have python3 already; a CUDA base image does not. Its apt versions are
# whatever that base image pins, which is the point of choosing a base image tag.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /app

# Dependencies first, from the lock only: this layer is rebuilt when the lock changes,
# not when the code does. TORCH_INDEX_URL (optional) is a wheel index to take the locked
# torch version from first, e.g. PyTorch's CPU-only index for a smaller CPU image.
ARG TORCH_INDEX_URL=""
COPY requirements.lock ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" "$(grep '^torch==' requirements.lock)"; \
    fi \
    && pip install -r requirements.lock

# Installed as a package, configs included (package data): every entry (python train.py,
# python eval.py, python -m seedbed, seedbed-train, seedbed-eval, seedbed-verify, ...)
# finds them from any directory. The source tree is not needed once installed.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build src \
    && useradd --create-home --uid 1000 seedbed \
    && mkdir -p /app/outputs \
    && chown seedbed:seedbed /app/outputs

COPY train.py eval.py ./

# Numeric, so that `docker run --user` and the host agree on who owns outputs/.
USER 1000:1000
CMD ["python", "train.py"]
