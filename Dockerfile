# clat-operator: one image, three commands.
#   clat-operator run      the kopf operator (runs as the non-root user below)
#   clat-translator run    the CLAT sidecar it injects (runs as root by its securityContext:
#                          it creates a TUN device and nftables rules in the pod's netns)
#   clat-node agent|handoff  node mode: the per-node agent, and the unprivileged init step of
#                          its pods (docs/node-mode.md)
# `make image` builds this with podman on a debootstrap'd trixie (BASE_IMAGE); anywhere else
# the default base is Debian's official image.
ARG BASE_IMAGE=debian:trixie-slim

FROM ${BASE_IMAGE} AS bpf
# The kernel data path's tc program (clat.bpf.c -> clat.bpf.o, package data); the compiler and
# headers stay in this stage. Not pinned: see the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
COPY translator /src/translator
WORKDIR /src/translator/clat_translator/bpf
# asm/types.h is in Debian's multiarch include directory; trixie's clang has no
# -print-multiarch: dpkg-architecture names it where dpkg-dev is installed, else uname does.
RUN clang -O2 -g -Wall -Werror -target bpf \
      -I"/usr/include/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")" \
      -c clat.bpf.c -o clat.bpf.o

FROM ${BASE_IMAGE} AS build
# Debian packages follow the base image's suite (trixie's security updates), not pins: a pinned
# version leaves the mirror at the next point release and the build breaks.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first, pinned by constraints.txt: source edits do not reinstall them.
COPY constraints.txt /src/constraints.txt
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/clat \
 && /opt/clat/bin/pip install -q -r /src/constraints.txt
COPY pyproject.toml README.md /src/
COPY translator /src/translator
COPY --from=bpf /src/translator/clat_translator/bpf/clat.bpf.o /src/translator/clat_translator/bpf/
COPY operator /src/operator
COPY node /src/node
RUN /opt/clat/bin/pip install -q --no-deps --no-build-isolation /src \
 && /opt/clat/bin/pip check \
 && /opt/clat/bin/pip uninstall -q -y pip setuptools

FROM ${BASE_IMAGE}
# python3: the venv's interpreter. nftables: the sidecar's NAT66 masquerade (it runs the
# `nft` command); netlink is pyroute2, so no iproute2. libbpf1: loads the kernel data path
# (ctypes). Not pinned: see the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 nftables libbpf1 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 65532 -K SYS_GID_MAX=65532 clat \
 && useradd --system --uid 65532 -K SYS_UID_MAX=65532 --gid clat --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin clat
COPY --from=build /opt/clat /opt/clat
ENV PATH=/opt/clat/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# Last: a new revision changes only this layer, not the packages above.
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="clat-operator" \
      org.opencontainers.image.description="CLAT (RFC 6877 464XLAT) for Kubernetes pods: the kopf operator and the injected clat-translator sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/clat-operator/clat-operator" \
      org.opencontainers.image.base.name="debian:trixie-slim"
CMD ["clat-operator", "run"]
