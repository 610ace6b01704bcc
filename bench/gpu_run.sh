#!/usr/bin/env bash
# The VLM throughput table on the GPU machine, everything within TOTAL_S (default 540 s: 9 minutes).
#
# Here first (pages and wheels into git-ignored folders; the device gets the repo, not ../shared):
#   bash bench/gpu_pack.sh
# Then from the session, one call:
#   run(command="bash bench/gpu_run.sh", carry=[".whl", "bench/data"], timeout_s=600)
#
# Writes under $OUT: env.txt (GPU, versions), and per run NAME.jsonl (one JSON line per
# configuration as it ends, then the summary line; see bench/vlm_throughput.py) and NAME.log:
#   deepseek-ocr-2         full:deepseek-ocr-2, batch 256,128,32,8, dynamic cache    --max-seconds <= DS_S
#   got-ocr2               full:got-ocr2, the same                                    --max-seconds <= GOT_S
#   deepseek-ocr-2-static  full:deepseek-ocr-2 --static-cache (transformers compiles the decode step
#                          on CUDA by itself), only with what is left                 --max-seconds <= STATIC_S
# Budget: ~30 s for the wheels' install and the checks; each run's --max-seconds counts from its
# process start (imports, model build, preparation alone, warm-ups included), the bench skips a
# configuration its estimate says will not fit and stops the one running at that limit; `timeout`
# adds 20 s of grace (SIGTERM: the bench still prints its summary), then kills. A run starts only
# with at least MIN_S seconds for it, keeping 30 s of the total in hand. Worst case:
# 30 + (230 + 25) + (190 + 25) = 500 s, and then the static-cache run is skipped.
#
# CPU twin (tests/test_vlm_bench.py rehearses it): DEVICE=cpu SIZE=tiny PY=python DATA=DIR WHL=none
# ONLY=deepseek-ocr-2 DS_S=20 TOTAL_S=60 MIN_S=5 bash bench/gpu_run.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
TOTAL_S=${TOTAL_S:-540}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-full}
PY=${PY:-python3}
DATA=${DATA:-bench/data}
WHL=${WHL:-.whl}
DS_S=${DS_S:-230}
GOT_S=${GOT_S:-190}
STATIC_S=${STATIC_S:-240}
MIN_S=${MIN_S:-60}
ONLY=${ONLY:-}
BATCH_SIZES=256,128,32,8
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ -d "$WHL" ] && ls "$WHL"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} || { echo "wheel install failed"; exit 1; }
fi
{
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    "$PY" - <<'PY'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "transformers", "huggingface_hub", "tokenizers", "safetensors", "numpy", "PIL", "cv2",
             "regex", "httpx2", "anyio", "idna", "h11", "click"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
    except Exception as e:  # noqa: BLE001
        print(name, "NOT IMPORTABLE:", type(e).__name__, e)
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from transformers import DeepseekOcr2ForConditionalGeneration, GotOcr2ForConditionalGeneration  # noqa: F401
print("model classes: ok")
PY
} 2>&1 | tee "$OUT/env.txt"
grep -q "^model classes: ok" "$OUT/env.txt" || { echo "transformers cannot load the two model classes: see env.txt above"; exit 1; }
[ -d "$DATA/pages" ] || { echo "no $DATA/pages: run bash bench/gpu_pack.sh here first and carry bench/data"; exit 1; }

bench() {  # NAME PLANNED_SECONDS ARGS...
    local name=$1 want=$2
    shift 2
    if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then return; fi
    local left=$((TOTAL_S - SECONDS - 30))
    local ms=$((want < left ? want : left))
    if [ "$ms" -lt "$MIN_S" ]; then
        echo "== $name: not run, $left s left of $TOTAL_S" | tee -a "$OUT/not_run.txt"
        return
    fi
    echo "== $name: --max-seconds $ms (at $SECONDS s of $TOTAL_S)"
    timeout -k 5 $((ms + 20)) "$PY" bench/vlm_throughput.py "$@" --images "$DATA/pages" --hints "$DATA/hints.json" \
        --device "$DEVICE" --batch-sizes "$BATCH_SIZES" --max-seconds "$ms" \
        2> >(tee "$OUT/$name.log" >&2) | tee "$OUT/$name.jsonl"
    echo "== $name: exit ${PIPESTATUS[0]} at $SECONDS s"
}

bench deepseek-ocr-2 "$DS_S" --model "$SIZE:deepseek-ocr-2"
bench got-ocr2 "$GOT_S" --model "$SIZE:got-ocr2"
bench deepseek-ocr-2-static "$STATIC_S" --model "$SIZE:deepseek-ocr-2" --static-cache
echo "== done at $SECONDS s; results in $OUT"
