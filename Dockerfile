# syntax=docker/dockerfile:1.7
# keras-serve images. Two targets share one layout (docs/deployment.md):
#   docker build -t keras-serve:gpu .               GPU (default): TensorFlow CUDA build + onnxruntime-gpu
#   docker build -t keras-serve:cpu --target cpu .  CPU: ONNX Runtime only, no TensorFlow
# Dependencies are pinned in requirements/*.txt and installed in their own stage,
# before any code is copied, so code changes rebuild only the last layers.
# tests/test_deploy.py runs the cpu target's install and start commands outside Docker.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"

# ---- dependencies: one virtualenv per target, copied whole into the runtime stage
FROM python AS deps-cpu
WORKDIR /build
COPY requirements/base.txt requirements/serve.txt requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "${VIRTUAL_ENV}" && pip install -r requirements/serve.txt

FROM python AS deps-gpu
WORKDIR /build
COPY requirements/base.txt requirements/gpu.txt requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "${VIRTUAL_ENV}" && pip install -r requirements/gpu.txt

# ---- the runtime layout both targets share: non-root user, settings, health check
FROM python AS serve
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /srv --no-create-home \
       --shell /usr/sbin/nologin app
WORKDIR /srv
# Settings (app/settings.py); override with -e / compose environment / pod env.
# MODELS_DIR is baked in below and can be replaced by a mounted volume.
ENV MODELS_DIR=/srv/models \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=1 \
    LOG_LEVEL=info \
    LOG_JSON=false \
    RUNTIME=auto \
    DRAIN_SECONDS=20
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8000'), timeout=4)"]
# numeric, so that Kubernetes' runAsNonRoot can verify it
USER 10001:10001
CMD ["python", "-m", "app"]

# ---- CPU target: ONNX Runtime on CPU
FROM serve AS cpu
COPY --from=deps-cpu /opt/venv /opt/venv
COPY app/ app/
COPY models/ models/

# ---- GPU target (default, last stage): RUNTIME=auto picks TensorFlow when a GPU is visible.
# The CUDA libraries come from the nvidia-* wheels; ONNX Runtime finds them on LD_LIBRARY_PATH.
# TensorFlow grows its GPU memory instead of taking it all, so several workers share a GPU.
FROM serve AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_cupti/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cufft/lib:/opt/venv/lib/python3.11/site-packages/nvidia/curand/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cusolver/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cusparse/lib:/opt/venv/lib/python3.11/site-packages/nvidia/nccl/lib:/opt/venv/lib/python3.11/site-packages/nvidia/nvjitlink/lib
COPY --from=deps-gpu /opt/venv /opt/venv
COPY app/ app/
COPY models/ models/
