#!/usr/bin/env bash
# Puts what bench/gpu_run.sh needs on the GPU machine into this repo's git-ignored folders (the
# device machine gets the repo only, not ../shared):
#   bench/data/pages/*.png, bench/data/gt/*.txt  N old_books pages (default 32, every (178/N)-th by
#                                                name: all six books) and their ground truth
#   bench/data/hints.json                        their est_chars, from bench/old_books_est_chars.json
#   .whl/*.whl                                   transformers 5.25.0 and what it needs beyond the
#                                                device's packages (see below)
# About 2 MB of pages and 21 MB of wheels (the carry limit is 64 MiB). Then, from the session:
#   run(command="bash bench/gpu_run.sh", carry=[".whl", "bench/data"], timeout_s=600)
#
#   bash bench/gpu_pack.sh [N]     SRC=DIR: pages/ and gt/ elsewhere (default ../shared/eval/old_books);
#                                  NO_WHEELS=1: pages only
set -euo pipefail
N=${1:-32}
cd "$(git rev-parse --show-toplevel)"
SRC=${SRC:-../shared/eval/old_books}
[ -d "$SRC/pages" ] && [ -d "$SRC/gt" ] || { echo "no $SRC/pages and $SRC/gt (SRC=...)" >&2; exit 1; }

rm -rf bench/data
mkdir -p bench/data/pages bench/data/gt
python3 - "$SRC" "$N" <<'PY'
import json, os, shutil, sys
src, n = sys.argv[1], int(sys.argv[2])
names = sorted(f for f in os.listdir(os.path.join(src, "pages")) if f.endswith(".png"))
pick = [names[(i * len(names)) // n] for i in range(min(n, len(names)))]
hints = json.load(open("bench/old_books_est_chars.json"))
for name in pick:
    shutil.copyfile(os.path.join(src, "pages", name), os.path.join("bench/data/pages", name))
    gt = os.path.splitext(name)[0] + ".txt"
    shutil.copyfile(os.path.join(src, "gt", gt), os.path.join("bench/data/gt", gt))
json.dump({name: hints[name] for name in pick}, open("bench/data/hints.json", "w"), indent=0)
print(f"{len(pick)} pages: {' '.join(pick)}")
PY

# What transformers 5.25.0 needs on the device (python 3.12, huggingface_hub 1.33.0, tokenizers
# 0.23.2, safetensors 0.8.0): at import it requires huggingface-hub >=2.4.0,<3.0 (the device's
# 1.33.0 fails that check) and regex >=2025.10.22; huggingface_hub 2.4.0 imports httpx2 (not httpx),
# httpx2 imports httpcore2, httpcore2 imports truststore (none of the three is on the device). The
# rest are floors of those packages whose device versions are not known: click >=8.4.2 and hf-xet
# >=1.6 (huggingface_hub), anyio >=4.10 and idna >=3.18 (httpx2), h11 >=0.16 (httpcore2),
# typing_extensions >=4.16 (anyio 4.16). Versions: those this repo's virtualenv runs 5.25.0 with.
# Checked on a stand-in virtualenv with the device's huggingface_hub 1.33.0 and transformers 5.17.0:
# transformers alone fails the hub check; without httpx2, httpcore2 or truststore the import fails.
PACKAGES="transformers==5.25.0 huggingface_hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5
          regex==2026.12.2 click==8.5.1 hf-xet==1.8.0 anyio==4.16.0 idna==3.20 h11==0.16.0 typing_extensions==4.16.0"
if [ -z "${NO_WHEELS:-}" ]; then
    rm -rf .whl && mkdir -p .whl
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $PACKAGES 2> >(grep -v "is ignored" >&2)
    ls .whl
fi
du -sh bench/data .whl 2>/dev/null || true
