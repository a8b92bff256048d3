#!/usr/bin/env bash
# The GPU machine's benchmark, as one call of at most ~8 minutes (GPU_BUDGET_S, default 480 s):
#
#   bash scripts/gpu_pack.sh                 # here, once: .gpu/ = Deno, the Vulkan loader, the npm cache
#   bash bench/gpu.sh [OUTDIR]               # there (device tool: carry .gpu, OUTDIR = $OUT)
#
# Runs, each in its own process under a time limit so that one stall cannot lose the others' figures:
# adapter + measured peaks, kernel benches (GEMM, depthwise, stem, (2+1)D, pointwise, BN, AdamW), the seed's
# stack on the same GPU (PyTorch eager + cuDNN, fp32 and AMP, when python3 has CUDA torch), one training step
# of the ir-CSN-152 classifier (batch 16 per GPU, the seed's) and of the ir-CSN-50 UNet (batch 4), f32 (also
# with every shape's kernel variants timed and the fastest kept, CSN_BENCHMARK=1) and autocast f16, the GPU
# time per kernel of one step of each model, and the seconds per study of the seed-configuration inference,
# f32 and autocast f16.
# Results: OUTDIR/gpu-results.jsonl (one JSON line per figure) and OUTDIR/gpu.log (everything printed).
set -u
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-out/gpu}}
mkdir -p "$OUTDIR"
R="$OUTDIR/gpu-results.jsonl"
LOG="$OUTDIR/gpu.log"
BUDGET=${GPU_BUDGET_S:-480}
T0=$(date +%s)
export XDG_RUNTIME_DIR=/tmp DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
exec > >(tee -a "$LOG") 2>&1

if ! command -v deno >/dev/null 2>&1; then
  mkdir -p /tmp/csn-deno
  if command -v xz >/dev/null 2>&1; then xz -dc .gpu/deno.xz > /tmp/csn-deno/deno
  else python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open('.gpu/deno.xz'), open('/tmp/csn-deno/deno','wb'))"; fi
  chmod +x /tmp/csn-deno/deno
  export PATH="/tmp/csn-deno:$PATH"
fi
if [ -d .gpu/denodir ]; then export DENO_DIR="$PWD/.gpu/denodir"; fi
# The Vulkan loader and libglvnd (NVIDIA's Vulkan driver lives in libGLX_nvidia, which needs libGLdispatch).
if ls .gpu/*.deb >/dev/null 2>&1; then
  for f in .gpu/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nv_icd" ]; then
  export VK_DRIVER_FILES="$nv_icd" VK_ICD_FILENAMES="$nv_icd"
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
echo "== $(date -u +%FT%TZ) $(deno --version | head -1); Vulkan ICD: ${VK_DRIVER_FILES:-system}"
if [ -n "${VK_DRIVER_FILES:-}" ]; then
  cat "$VK_DRIVER_FILES"
  lib=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ICD']['library_path'])" "$VK_DRIVER_FILES" 2>/dev/null)
  p=$(ldconfig -p | awk -v l="$lib" '$1==l {print $NF; exit}')
  echo "ICD library $lib -> ${p:-not in ldconfig}"; [ -n "$p" ] && ldd "$p" | grep -i "not found"
fi
cat > /tmp/csn-adapter.ts <<'TS'
const a = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
console.log("adapter:", a ? JSON.stringify({ ...a.info, description: a.info.description }) : "none");
TS
VK_LOADER_DEBUG=error,warn,driver deno run -A /tmp/csn-adapter.ts 2>&1 | tail -25
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true

# part NAME LIMIT_S CMD...: runs CMD under min(LIMIT_S, what is left of the budget).
part() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - T0) - 5))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped (budget spent)"
    echo "{\"part\":\"$name\",\"skipped\":\"budget\"}" >> "$R"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s, $(( $(date +%s) - T0 )) s elapsed)"
  local t=$(date +%s)
  timeout -k 5 "$limit" "$@"
  local rc=$?
  echo "== $name: rc $rc in $(( $(date +%s) - t )) s"
  [ $rc -ne 0 ] && echo "{\"part\":\"$name\",\"rc\":$rc}" >> "$R"
  return 0
}
D="deno run -A --no-lock --cached-only"
# GPU_SMOKE=1: tiny sizes, to check this script on lavapipe before spending GPU time on it.
S=""; P=seed
# It also forces the "gpu" kernel profile (CSN_KERNELS), so that lavapipe runs the kernels a GPU would.
if [ "${GPU_SMOKE:-}" = 1 ]; then S="--smoke"; P=tiny; CLS_BATCH=1; UNET_BATCH=1; export CSN_KERNELS=${CSN_KERNELS:-gpu}; fi
part info 60 $D bench/gpu.ts --part info --results "$R" $S
# Whether the adapter offers wgpu-cooperative-matrix (tensor cores), and a naive kernel's error and TFLOP/s.
part coopmat 45 $D bench/coopmat.ts --results "$R" $([ -n "$S" ] && echo "--n 256")
part kernels 170 $D bench/gpu.ts --part kernels --results "$R" $S --only "${GPU_KERNELS:-gemm,conv,bn,adamw}"
# GPU_NO_TORCH=1 skips the peer (e.g. on a rerun once its figures are in).
if [ -z "${GPU_NO_TORCH:-}" ] && python3 -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  part torch-peer 130 env PYTHONUNBUFFERED=1 python3 bench/torch_gpu.py "$R"
else
  echo "== torch-peer: skipped (no CUDA PyTorch)"
fi
part cls-train 120 $D bench/gpu.ts --part train --model cls --batch "${CLS_BATCH:-16}" --results "$R" $S
part unet-train 120 $D bench/gpu.ts --part train --model unet --batch "${UNET_BATCH:-4}" --results "$R" $S
# The same steps and the GEMM and conv benches with every shape's tile timed on its first call and the fastest
# kept (CSN_BENCHMARK=1, core/tuner.ts): the step against the rules' step above, and per shape each tile's
# GPU time (the rules' choices among them: the old square GEMM rule is one of the GEMM's four tiles).
part cls-train-tuned 90 env CSN_BENCHMARK=1 $D bench/gpu.ts --part train --model cls --batch "${CLS_BATCH:-16}" --steps 4 --results "$R" $S
part unet-train-tuned 120 env CSN_BENCHMARK=1 $D bench/gpu.ts --part train --model unet --batch "${UNET_BATCH:-4}" --steps 4 --results "$R" $S
part kernels-tuned 90 env CSN_BENCHMARK=1 $D bench/gpu.ts --part kernels --results "$R" $S --only gemm,conv
# The classifier's step again, submitting only at the step's end (the default on a GPU submits every 128
# dispatches, so that the GPU starts while the host still records the step).
part cls-train-submit0 60 env CSN_SUBMIT_EVERY=0 $D bench/gpu.ts --part train --model cls --batch "${CLS_BATCH:-16}" --results "$R" $S
# The same steps under autocast f16 (f16 conv/linear operands, f32 accumulation, GradScaler).
part cls-train-amp 90 $D bench/gpu.ts --part train --model cls --batch "${CLS_BATCH:-16}" --amp --results "$R" $S
part unet-train-amp 90 $D bench/gpu.ts --part train --model unet --batch "${UNET_BATCH:-4}" --amp --results "$R" $S
# GPU time per kernel of one step of each (CSN_PROFILE=1: a timestamp pair around every dispatch).
part cls-profile 60 env CSN_PROFILE=1 $D bench/gpu.ts --part train --model cls --batch "${CLS_BATCH:-16}" --steps 2 --results "$R" $S
part unet-profile 60 env CSN_PROFILE=1 $D bench/gpu.ts --part train --model unet --batch "${UNET_BATCH:-4}" --steps 2 --results "$R" $S
part infer 100 $D bench/infer.ts --preset $P --studies 3 --results "$R" $([ -n "$S" ] && echo "--slices 20 --size 64")
# The same with the kernel variants timed on the first study (CSN_BENCHMARK=1; the second queues behind its
# trials, so the warm figure is studies 3-4), if the budget allows.
part infer-tuned 100 env CSN_BENCHMARK=1 $D bench/infer.ts --preset $P --studies 4 --results "$R" $([ -n "$S" ] && echo "--slices 20 --size 64")
# The same under autocast f16 (infer --amp), last: it runs only where the budget allows.
part infer-amp 100 $D bench/infer.ts --preset $P --studies 2 --amp --results "$R" $([ -n "$S" ] && echo "--slices 20 --size 64")
# GPU time per kernel over an inference run (where classify's and segment's seconds go), if the budget allows.
part infer-profile 60 env CSN_PROFILE=1 $D bench/infer.ts --preset $P --studies 2 $([ -n "$S" ] && echo "--slices 20 --size 64")
# What the *-tuned parts found, per kind of kernel (host only: the rules' variants against the chosen ones).
$D bench/tuning_summary.ts "$R" || true
echo "== done in $(( $(date +%s) - T0 )) s; results in $R"
