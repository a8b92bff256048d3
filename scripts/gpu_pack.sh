#!/usr/bin/env bash
# Packs what bench/gpu.sh needs on a bare GPU machine that cannot reach any registry, into .gpu/ (ignored by
# git; the device tool carries it): this machine's Deno binary (xz), Debian's Vulkan loader and libglvnd (.debs,
# unpacked there only if the machine has none), and a DENO_DIR holding the npm packages the inference bench
# imports. About 37 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu
deno_bin=$(readlink -f "$(command -v deno)")
if [ ! -f .gpu/deno.xz ] || [ "$deno_bin" -nt .gpu/deno.xz ]; then
  xz -T2 -6 -c "$deno_bin" > .gpu/deno.xz.part && mv .gpu/deno.xz.part .gpu/deno.xz
fi
if ! ls .gpu/libvulkan1_*.deb >/dev/null 2>&1; then
  (cd .gpu && apt-get download libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2 2>/dev/null)
fi
# Without the lockfile, Deno caches (and later wants) only the packages these entries import, not every
# package of deno.json (the browser tests' puppeteer-core would double the size); bench/gpu.sh runs --no-lock.
rm -rf .gpu/denodir
DENO_DIR="$PWD/.gpu/denodir" deno cache --no-lock bench/gpu.ts bench/coopmat.ts bench/infer.ts 2>/dev/null
rm -rf .gpu/denodir/gen .gpu/denodir/*_cache_v2*
du -sh .gpu
