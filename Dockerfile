# LLM Studio image. CPU by default; for NVIDIA GPUs pick a CUDA build of torch:
#   docker build -t llm-studio .
#   docker build -t llm-studio:cuda --build-arg TORCH_VARIANT=cu128 .
#   docker run -p 10101:10101 -v llm-studio-data:/data llm-studio            (CPU)
#   docker run --gpus all -p 10101:10101 -v llm-studio-data:/data llm-studio:cuda
# The studio binds to 0.0.0.0 only inside the container; publish the port to choose who can reach it
# (e.g. -p 127.0.0.1:10101:10101 keeps it on this machine).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# cpu, or a CUDA variant of the PyTorch wheel index (cu126, cu128, ...)
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DS_BUILD_OPS=0 \
    PIPENV_VENV_IN_PROJECT=1 PIPENV_IGNORE_VIRTUALENVS=1

RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 studio

WORKDIR /opt/llm-studio
COPY Pipfile Pipfile.lock pyproject.toml ./
COPY llm_studio ./llm_studio

# torch comes from the PyTorch index for the chosen variant; everything else from the lock file.
RUN python -m pip install pipenv \
    && python -m venv .venv \
    && .venv/bin/pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
    && pipenv requirements | grep -v -E '^(torch==|-e )' > /tmp/requirements.txt \
    && .venv/bin/pip install -r /tmp/requirements.txt \
    && .venv/bin/pip install --no-deps -e .

COPY app ./app
COPY experiments ./experiments

# Runtime state lives on a volume owned by the unprivileged user, so the studio can always write it.
RUN mkdir -p /data && chown -R studio:studio /data
VOLUME /data
ENV LLM_STUDIO_HOME=/data \
    H2O_WAVE_LISTEN=0.0.0.0:10101 \
    H2O_WAVE_ADDRESS=http://127.0.0.1:10101 \
    H2O_WAVE_DATA_DIR=/data/wave \
    PATH=/opt/llm-studio/.venv/bin:$PATH
USER studio
EXPOSE 10101
CMD ["wave", "run", "--no-reload", "app.main"]
