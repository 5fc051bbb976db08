#!/usr/bin/env bash
# The CamVid benchmark runs of issue 4, one after another (2-core CPU: an epoch of 367 crops of 256 takes about
# 30 s, evaluating the 233 test images about 1 minute per output stride).
#   (b) DeepLabv3 head ablation and (a) FCN-32s/16s/8s: 12 epochs each, the same recipe and backbone (~1.5 hours)
#   (c) LONG=1: DeepLabv3-MobileNetV2 from the ImageNet backbone vs from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
crop=(--crop-size 256 --batch-size 8)
epochs=${EPOCHS:-12}
for head in "no_aspp|" "aspp|6,12,18" "aspp_pool|6,12,18"; do
    name=${head%%|*}; rates=${head#*|}
    pool=(); [ "$name" = aspp_pool ] || pool=(--no-image-pooling)
    .venv/bin/python benchmarks/seg_camvid.py --experiment "$name" --atrous-rates "$rates" "${pool[@]}" \
        --epochs "$epochs" "${crop[@]}"
done
for fcn in fcn32s fcn16s fcn8s; do
    .venv/bin/python benchmarks/seg_camvid.py --experiment "$fcn" --model "${fcn}_mobilenet_v2" --epochs "$epochs" \
        "${crop[@]}"
done
[ -n "${LONG:-}" ] || exit 0
.venv/bin/python benchmarks/seg_camvid.py --experiment pretrained --epochs 20 "${crop[@]}"
.venv/bin/python benchmarks/seg_camvid.py --experiment scratch --scratch --epochs 20 "${crop[@]}"
