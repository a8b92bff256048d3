#!/usr/bin/env bash
# Installs what csn-webgpu needs on a fresh Debian/Ubuntu machine (idempotent):
#   Deno 2.9.6 from the npm registry, Mesa's Vulkan driver (lavapipe: WebGPU without a GPU),
#   and the tests' references from Debian: python3-torch / python3-numpy, and dcmtk, libgdcm-tools,
#   python3-pydicom, python3-nibabel (DICOM/NIfTI written and converted by tools nobody here wrote), python3-scipy
#   (gaussian_filter, ndimage.label).
#   openmpi-bin: mpirun and libmpi for data parallelism (`deno task train ... --devices N`).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

need_apt=()
for p in mesa-vulkan-drivers libvulkan1 python3-torch python3-numpy dcmtk libgdcm-tools python3-pydicom python3-gdcm python3-nibabel python3-opencv python3-scipy chromium openmpi-bin; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# On Debian 12, lavapipe from bookworm-backports (Mesa 25.0) instead of 22.3: several times the storage loads
# per second, faster training steps (docs/perf.md, 2026-11-30). Only mesa-vulkan-drivers and the libdrm it
# needs come from backports (4 packages); `-t bookworm-backports` would move the whole Mesa stack.
os_id=$(. /etc/os-release 2>/dev/null && echo "${ID:-}:${VERSION_CODENAME:-}" || true)
mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [ "$os_id" = "debian:bookworm" ] && [[ "$mesa_version" != *"~bpo12"* ]]; then
  if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup: adding the bookworm-backports suite (/etc/apt/sources.list.d/bookworm-backports.sources)" >&2
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' 'Components: main' \
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
      $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  echo "setup: installing Mesa's lavapipe from bookworm-backports" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers/bookworm-backports >/dev/null
fi

DENO_VERSION=2.9.6
if ! command -v deno >/dev/null 2>&1 || ! deno --version | grep -q "deno ${DENO_VERSION}"; then
  if ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
  fi
  echo "setup: installing deno ${DENO_VERSION} from the npm registry" >&2
  $SUDO npm i -g "deno@${DENO_VERSION}" >/dev/null
fi
