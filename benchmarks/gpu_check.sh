#!/usr/bin/env bash
# The device checks CPU tests cannot show, in one run that fits in 10 minutes on one GPU, most
# important first, each step under its own time limit (a slow step cannot starve the rest):
# ResNet-50 at 224 px, bf16, batch 256 pruned to a latency budget of 0.4 with a latency table
# measured on the GPU, per-filter and stream-coupled, beside the same ratio as a MAC budget
# (benchmarks/latency_budget.py: asked, predicted and measured speed-ups); the ways of adding a pruned branch into its stream (benchmarks/index_add.py); the time of a
# ResNet-50 stage-1 conv against its channel counts (benchmarks/channel_steps.py); dense vs pruned
# forward latency of ResNet-50 at 224 px (eager and CUDA-graph replay, BatchNorm kept and
# folded, global and per-layer scope, round_to 8/32/64, per conv (benchmarks/layer_latency.py),
# then torch.compile); ResNet-50
# training images/s through the device JPEG decoder and the PIL DataLoader; ResNet-50 mask
# time at N' = 1000 (Table 2's setting); mask time of ResNet-56 widths 1-4 (start-up apart);
# the greedy of Eq. 4 at S = 22,720 (CUDA graphs of its steps); CIFAR ResNet-56 training
# throughput per step path (torch.compile too, as for ImageNet); `sosp prune --batch-size auto`; the
# device-sensitive tests on the GPU. FULL=1 adds what earlier sessions measured: ResNet-56
# latency (eager and compiled) and a two-epoch training on a fake CIFAR-10 in the real on-disk
# format, eagerly and with --cuda-graph.
#
#   bash benchmarks/gpu_check.sh [OUT]          # on a GPU machine, from the repository root
#   DEVICE=cpu SMALL=1 bash benchmarks/gpu_check.sh /tmp/check   # the same steps, tiny, on a CPU
#   STEPS="latency_imagenet tests" bash benchmarks/gpu_check.sh     # only the steps named
#   STEPS="mask_time_imagenet mask_time greedy_time throughput throughput_imagenet batch_auto" \
#       bash benchmarks/gpu_check.sh            # the mask and training rows
#
# On an H200 the steps took about 8 minutes in all (2026-11), before channel_steps and
# layer_latency_imagenet (up to 90 s) were added; their limits add up to more, so
# the last ones may be cut by a 10-minute call: name them in STEPS in a second call.
#
# Everything goes to OUT (default: $OUT, else results/gpu_check): logs and CSVs in OUT/files,
# packed into OUT/gpu_check.tgz after every step (a machine that hands back only a few files,
# or a run killed midway, still returns all that was written); OUT/files is removed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
top=${1:-${OUT:-results/gpu_check}}
out=$top/files
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
variants="--coupling filter stream --round-to none 8"
if [ "${SMALL:-0}" = 1 ]; then
    n=40; n_in=8; widths="1 2"; steps=2; epochs=1; compile=""; greedy_sizes=600; mask_small="--image-size 8"
    jpeg="--images 20 --batch-size 4 --steps 2 --warmup 1 --workers 2"
    latency="--quick $variants"
    latency_in="--precisions fp32 --batch-sizes 1 2 --repeats 2 --n-samples 8 --round-to 8"
    latency_in_more="--precisions fp32 --batch-sizes 2 --repeats 2 --n-samples 8"
    index_add="--quick"
    channel_steps="--batch-size 2 --channels 8 --size 8 --step 4 --repeats 2"
    layer_latency="--batch-size 2 --n-samples 8 --warmup 1 --repeats 1"
    compiled_in="--batch-sizes 2 --repeats 2 --n-samples 8 --precisions fp32"
    compiled="--batch-sizes 2 --repeats 2 --n-samples 16 --coupling stream --round-to 8"
    latency_budget="--batch-size 2 --ratios 0.2 --n-samples 8 --step 1024 --repeats 1"
    latency_budget="$latency_budget --budgets latency --coupling stream --corrections 1"
else
    n=1000; n_in=1000; widths="1 2 3 4"; steps=30; epochs=2; compile="--compile default"; greedy_sizes="5000 22720"; mask_small=""
    jpeg="--images 1000 --batch-size 256 --steps 12 --warmup 3 --workers 14"
    latency="--modes eager --batch-sizes 1 64 128 256 1024 $variants"
    latency_in="--precisions bf16 fp32 --batch-sizes 1 64 256 --repeats 20 $variants"
    latency_in_more="--precisions bf16 --batch-sizes 1 64 256 --repeats 20"
    index_add=""
    channel_steps="--precision bf16 --layout nhwc --batch-size 256 --channels 64 --size 56 --step 4"
    layer_latency="--precision bf16 --layouts nhwc --batch-size 256"
    compiled_in="--precisions bf16 --batch-sizes 256 --repeats 20"
    compiled="--batch-sizes 128 1024 --coupling filter stream --round-to 8"
    latency_budget="--precision bf16 --layout nhwc --batch-size 256 --ratios 0.4 --n-samples 64"
    latency_budget="$latency_budget --step 32 --repeats 7"
fi
modes="--modes eager"
[ "${device%%:*}" = cuda ] && modes="--modes eager graph"
status=0
step() {  # step NAME SECONDS COMMAND...: run under a time limit, log to OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return; fi
    echo "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc, $((SECONDS - start)) s"
    [ $rc -eq 0 ] || { status=1; tail -n 20 "$out/$name.log"; }
    tar czf "$top/gpu_check.tgz.tmp" -C "$out" . && mv "$top/gpu_check.tgz.tmp" "$top/gpu_check.tgz"
}
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$out/device.txt"
step latency_budget_imagenet 240 python3 benchmarks/latency_budget.py --device "$device" \
    --imagenet $latency_budget --out "$out/latency_budget_resnet50.csv"
# The ways of adding a pruned branch into its residual stream (what per-filter structures pay
# per block), then ResNet-50 dense vs pruned: the four maskings of the paper's global ranking, eagerly and
# replayed as CUDA graphs, BatchNorm kept and folded; then the same fraction of every layer
# (scope local), at round_to 8 and 64; then torch.compile of the stream-coupled networks.
step index_add 30 python3 benchmarks/index_add.py --device "$device" $index_add \
    --out "$out/index_add.csv"
step channel_steps 30 python3 benchmarks/channel_steps.py --device "$device" $channel_steps \
    --out "$out/channel_steps.csv"
step latency_imagenet 130 python3 benchmarks/latency.py --device "$device" --imagenet \
    $modes --batchnorm kept folded $latency_in --out "$out/latency_resnet50.csv"
step latency_imagenet_local 70 python3 benchmarks/latency.py --device "$device" --imagenet \
    $modes --batchnorm kept folded $latency_in_more --coupling stream --round-to 8 64 \
    --scope local --out "$out/latency_resnet50_local.csv"
step layer_latency_imagenet 60 python3 benchmarks/layer_latency.py --device "$device" \
    --imagenet $layer_latency --coupling filter stream --round-to 8 \
    --out "$out/layer_latency_resnet50.csv"
step latency_imagenet_aligned 140 python3 benchmarks/latency.py --device "$device" --imagenet \
    $modes $latency_in_more --precisions bf16 fp32 --coupling stream filter --round-to 32 64 \
    --scope local global --out "$out/latency_resnet50_aligned.csv"
step throughput_imagenet 200 python3 benchmarks/train_throughput.py --device "$device" \
    --imagenet $jpeg $compile --out "$out/train_throughput"
step mask_time_imagenet 70 python3 benchmarks/mask_time.py --device "$device" --imagenet \
    --n-samples "$n_in" --batch-size 50 --label-samples 1 --out "$out/mask_time_resnet50"
step mask_time 60 python3 benchmarks/mask_time.py --device "$device" --widths $widths \
    --n-samples "$n" $mask_small --out "$out/mask_time_resnet56"
step throughput 120 python3 benchmarks/train_throughput.py --device "$device" \
    --steps "$steps" --workers 8 $compile --out "$out/train_throughput"
step greedy_time 40 python3 benchmarks/greedy_time.py --device "$device" --sizes $greedy_sizes \
    --out "$out/greedy_time.csv"
step batch_auto 40 python3 -m sosp prune --model resnet56 --dataset digits --method sosp_h \
    --ratio 0.5 --n-samples "$n" --batch-size auto --device "$device" --no-progress \
    --out "$out/prune_batch_auto"
step tests 50 env SOSP_TEST_DEVICE="$device" python3 -m pytest -q -rP -p no:cacheprovider -m device \
    tests/test_device.py tests/test_jpeg_loader.py
step latency_imagenet_compile 90 python3 benchmarks/latency.py --device "$device" --imagenet \
    --modes compile --batchnorm folded $compiled_in --coupling stream --round-to 8 \
    --scope global local --out "$out/latency_resnet50_compile.csv"
step latency_imagenet_compile_aligned 90 python3 benchmarks/latency.py --device "$device" \
    --imagenet --modes compile --batchnorm kept folded $compiled_in --coupling stream \
    --round-to 64 --scope local --out "$out/latency_resnet50_compile_aligned.csv"
if [ "${FULL:-0}" = 1 ]; then  # measured in earlier sessions; FULL=1 runs them again
    step latency 60 python3 benchmarks/latency.py --device "$device" $latency \
        --out "$out/latency_resnet56.csv"
    fake=$(mktemp -d)
    python3 -c "from sosp import data; data.write_fake_cifar10('$fake', per_batch=500)"
    step train 30 python3 -m sosp train --model resnet20 --dataset cifar10 --data-root "$fake" \
        --set epochs="$epochs" --device "$device" --no-progress --out "$out/train_fake_cifar10"
    if [ "${device%%:*}" = cuda ]; then
        step train_cuda_graph 30 python3 -m sosp train --model resnet20 --dataset cifar10 \
            --data-root "$fake" --set epochs="$epochs" --device "$device" --no-progress \
            --cuda-graph --out "$out/train_fake_cifar10_cuda_graph"
    fi
    rm -rf "$fake"
    step latency_compile 45 python3 benchmarks/latency.py --device "$device" --modes compile \
        --precisions fp32 $compiled --out "$out/latency_resnet56_compile.csv"
fi
rm -rf "$out"
echo "status $status; wrote $top/gpu_check.tgz (tar xzf it)"
exit $status
