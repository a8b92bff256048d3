#!/usr/bin/env bash
# Installs what csn-webgpu needs on a fresh Debian/Ubuntu machine (idempotent):
#   Deno 2.9.6 from the npm registry, Mesa's Vulkan driver (lavapipe: WebGPU without a GPU),
#   and the tests' references from Debian: python3-torch / python3-numpy, and dcmtk, libgdcm-tools,
#   python3-pydicom, python3-nibabel (DICOM/NIfTI written and converted by tools nobody here wrote).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

need_apt=()
for p in mesa-vulkan-drivers libvulkan1 python3-torch python3-numpy dcmtk libgdcm-tools python3-pydicom python3-gdcm python3-nibabel python3-opencv chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

DENO_VERSION=2.9.6
if ! command -v deno >/dev/null 2>&1 || ! deno --version | grep -q "deno ${DENO_VERSION}"; then
  if ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
  fi
  echo "setup: installing deno ${DENO_VERSION} from the npm registry" >&2
  $SUDO npm i -g "deno@${DENO_VERSION}" >/dev/null
fi
