#!/usr/bin/env bash
# The device checks CPU tests cannot show, in one run that fits in 6 minutes on one GPU:
# the device-sensitive tests on the GPU, mask time (ResNet-56 widths 1-4, ResNet-50 at 224 px),
# training throughput (eager and CUDA-graph steps), dense vs pruned forward latency (ResNet-56
# and ResNet-50), and a two-epoch training on a fake CIFAR-10 in the real on-disk format, eagerly
# and with --cuda-graph (CUDA only: skipped on a CPU).
#
#   bash benchmarks/gpu_check.sh [OUT]          # on a GPU machine, from the repository root
#   DEVICE=cpu SMALL=1 bash benchmarks/gpu_check.sh /tmp/check   # the same steps, tiny, on a CPU
#
# Everything goes to OUT (default: $OUT, else results/gpu_check): logs and CSVs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-results/gpu_check}}
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
if [ "${SMALL:-0}" = 1 ]; then
    n=40; n_in=8; widths="1 2"; steps=2; epochs=1; latency="--quick"
    latency_in="--precisions fp32 --batch-sizes 1 2 --repeats 2 --n-samples 8"
else
    n=1000; n_in=200; widths="1 2 3 4"; steps=30; epochs=2
    latency="--modes eager --coupling filter stream --round-to none 8"
    latency_in="--precisions fp32 bf16 --batch-sizes 64 256 --round-to none 8"
fi
status=0
step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, remember a failure
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc, $((SECONDS - start)) s"
    [ $rc -eq 0 ] || { status=1; tail -n 20 "$out/$name.log"; }
}
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$out/device.txt"
step tests env SOSP_TEST_DEVICE="$device" python3 -m pytest -q -p no:cacheprovider -m device \
    tests/test_device.py
step mask_time python3 benchmarks/mask_time.py --device "$device" --widths $widths \
    --n-samples "$n" --out "$out/mask_time_resnet56"
step mask_time_imagenet python3 benchmarks/mask_time.py --device "$device" --imagenet \
    --n-samples "$n_in" --batch-size 50 --label-samples 1 --out "$out/mask_time_resnet50"
step throughput python3 benchmarks/train_throughput.py --device "$device" --steps "$steps" \
    --workers 8 --out "$out/train_throughput"
step latency python3 benchmarks/latency.py --device "$device" $latency \
    --out "$out/latency_resnet56.csv"
step latency_imagenet python3 benchmarks/latency.py --device "$device" --imagenet --modes eager \
    $latency_in --out "$out/latency_resnet50.csv"
fake=$(mktemp -d)
python3 -c "from sosp import data; data.write_fake_cifar10('$fake', per_batch=500)"
step train python3 -m sosp train --model resnet20 --dataset cifar10 --data-root "$fake" \
    --set epochs="$epochs" --device "$device" --no-progress --out "$out/train_fake_cifar10"
if [ "${device%%:*}" = cuda ]; then
    step train_cuda_graph python3 -m sosp train --model resnet20 --dataset cifar10 \
        --data-root "$fake" --set epochs="$epochs" --device "$device" --no-progress \
        --cuda-graph --out "$out/train_fake_cifar10_cuda_graph"
else
    echo "== train_cuda_graph: skipped, needs CUDA (DEVICE=$device)"
fi
rm -rf "$fake"
echo "status $status; wrote $out/"
exit $status
