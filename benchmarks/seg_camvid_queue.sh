#!/usr/bin/env bash
# The CamVid benchmark runs of issue 4 (b) and (c) after the pretrained one, one after another (2-core CPU: a
# 20-epoch run takes about 30 minutes). The ablation (b) uses a shorter schedule, the same for its three heads.
set -euo pipefail
cd "$(dirname "$0")/.."
crop=(--crop-size 256 --batch-size 8)
.venv/bin/python benchmarks/seg_camvid.py --experiment scratch --scratch --epochs "${EPOCHS:-20}" "${crop[@]}"
[ -n "${ABLATION:-}" ] || exit 0  # (b) takes another ~1.5 hours on 2 cores: ABLATION=1 to run it
for head in "no_aspp|" "aspp|6,12,18" "aspp_pool|6,12,18"; do
    name=${head%%|*}; rates=${head#*|}
    pool=(); [ "$name" = aspp_pool ] || pool=(--no-image-pooling)
    .venv/bin/python benchmarks/seg_camvid.py --experiment "$name" --atrous-rates "$rates" "${pool[@]}" \
        --epochs "${ABLATION_EPOCHS:-8}" "${crop[@]}"
done
