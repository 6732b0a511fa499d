#!/usr/bin/env bash
# The embedded demo (`make demo`): the model zoo on digits, then SOSP-H, SOSP-I and their
# first-order and diagonal ablations pruning half the structures of a ResNet-20 on the digits
# that ship with scikit-learn, and the pruned architecture counted back from its mask file.
# Until the training engine and the Snakemake workflow land, the network pruned is the randomly
# initialized one (pruning at initialization, as in the paper's Sec. 3.4).
set -euo pipefail
out=${1:-runs/demo}
sosp models --dataset digits
echo
for method in sosp_h sosp_i first_order diagonal; do
  sosp prune --model resnet20 --dataset digits --method "$method" --ratio 0.5 \
    --n-samples 500 --exclude resnet_downsample --out "$out/resnet20-$method" 2>/dev/null
done
echo
sosp count --model resnet20 --dataset digits --mask "$out/resnet20-sosp_i/mask.json"
echo "Masks, pruned networks and reports: $out/"
