# HyperLlama, CPU build. Multi-stage: the build stage runs scripts/build-release.sh (the same
# script CI runs), the runtime stage is Debian slim with the binary, a non-root user and a
# volume for models. GPU images: build with --build-arg FEATURES=cuda on a CUDA base image.
#
#   docker build -t hyperllama .
#   docker run -p 11434:11434 -v hyperllama:/home/hyperllama/.hyperllama -e HYPERLLAMA_API_KEYS=... hyperllama
FROM rust:1.95-bookworm AS build
ARG FEATURES=""
# Portable across AVX2 machines (target-cpu=native would tie the image to the build host).
ENV RUSTFLAGS="-C target-cpu=x86-64-v3" FEATURES=${FEATURES}
WORKDIR /src
COPY . .
RUN scripts/build-release.sh && cp target/release/hyperllama /usr/local/bin/hyperllama

# The same server with the MAX engine: Python and the sidecar's virtual environment
# (scripts/setup-max.sh: max[serve] pinned in python/pyproject.toml). HyperLlama starts,
# supervises and stops the sidecar itself; MAX's compile cache lives on the volume.
#   docker build --target max -t hyperllama:max .
FROM debian:bookworm-slim AS max
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgomp1 python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 hyperllama
COPY --from=build /usr/local/bin/hyperllama /usr/local/bin/hyperllama
COPY --chown=hyperllama python /opt/hyperllama/python
COPY --chown=hyperllama scripts/setup-max.sh /opt/hyperllama/scripts/setup-max.sh
RUN mkdir -p /opt/max-venv && chown hyperllama /opt/max-venv
USER hyperllama
ENV HYPERLLAMA_MAX_VENV=/opt/max-venv HYPERLLAMA_MAX_PYTHON=/opt/max-venv/bin/python \
    HYPERLLAMA_HOME=/home/hyperllama/.hyperllama HYPERLLAMA_HOST=0.0.0.0:11434 \
    MODULAR_CACHE_DIR=/home/hyperllama/.hyperllama/modular-cache \
    HYPERLLAMA_MAX_CACHE=/home/hyperllama/.hyperllama/max
RUN bash /opt/hyperllama/scripts/setup-max.sh \
 && mkdir -p /home/hyperllama/.hyperllama/models
VOLUME /home/hyperllama/.hyperllama
EXPOSE 11434
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["hyperllama", "health"]
ENTRYPOINT ["hyperllama"]
CMD ["serve"]

# The default image (the last stage): the server with the embedded llama.cpp engine.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 hyperllama
COPY --from=build /usr/local/bin/hyperllama /usr/local/bin/hyperllama
USER hyperllama
# Inside a container the server must listen on all interfaces; set API keys when publishing it.
ENV HYPERLLAMA_HOME=/home/hyperllama/.hyperllama HYPERLLAMA_HOST=0.0.0.0:11434
RUN mkdir -p /home/hyperllama/.hyperllama/models
VOLUME /home/hyperllama/.hyperllama
EXPOSE 11434
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["hyperllama", "health"]
ENTRYPOINT ["hyperllama"]
CMD ["serve"]
