# CPU image of the lichang REST service with the shipped default model.
# Build: docker build -t lichang .      Run: docker run -p 8000:8000 lichang
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    LICHANG_CACHE=/opt/lichang-cache LICHANG_HOST=0.0.0.0 LICHANG_PORT=8000

WORKDIR /app
# CPU build of torch first, from PyTorch's CPU index (the default PyPI wheel would pull CUDA libraries).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY lichang ./lichang
COPY models ./models
COPY training ./training
COPY eval ./eval
COPY service ./service
RUN pip install . \
    # build the base encoder at image build time, so a container starts without conversion
    && python -c "from lichang.models.base_encoder import resolve_encoder; print(resolve_encoder())" \
    && useradd --system --uid 10001 --home /app lichang \
    && chmod -R a+rX /opt/lichang-cache

USER lichang
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz').status == 200 else 1)"
CMD ["lichang", "serve"]
