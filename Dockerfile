# One image for every Quantum Trader service (docker-compose.yml): the locked environment from
# uv.lock, CPU torch only, the project installed, `qt` / `bentoml` / `prefect` / `mlflow` / `dask`
# on PATH. Build it through compose (`docker compose build`), which passes the torch wheel in as the
# named build context `wheels` (see below).
#
# CPU torch: pyproject.toml's [tool.uv.sources] pins torch to the CPU wheel at
# /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl, and uv.lock records that
# path. The wheel is copied to the same path here, so `uv sync --frozen` installs exactly the lock
# and can never pull a CUDA build. A machine without that file: point the source at PyTorch's CPU
# index and relock first (README, "Packaging"), then drop the COPY --from=wheels line.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    BENTOML_DO_NOT_TRACK=true \
    GX_ANALYTICS_ENABLED=false \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    QT_HOME=/state \
    PATH=/app/.venv/bin:$PATH

# uv as the Makefile installs it (pip cannot resolve this stack; uv can)
RUN pip install --no-cache-dir "uv==0.13.9"

WORKDIR /app
COPY --from=wheels torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl /opt/wheels/

# dependencies first (cached while only the code changes), then the project itself
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3.11

COPY qt/ qt/
COPY data/ data/
COPY exchange/ exchange/
COPY flows/ flows/
COPY features/ features/
COPY training/ training/
COPY serving/ serving/
COPY executor/ executor/
COPY dashboard/ dashboard/
COPY cli/ cli/
COPY params.yaml prefect.yaml dvc.yaml ./
RUN uv sync --frozen --no-dev --python /usr/local/bin/python3.11

# the state directory (lake, features, models, MLflow artifacts, executor state) is a volume
RUN useradd --create-home --uid 10001 qt && mkdir -p /state /prefect && chown -R qt:qt /state /prefect /app
USER qt
VOLUME ["/state"]
CMD ["qt", "--help"]
