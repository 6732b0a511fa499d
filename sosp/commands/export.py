"""`sosp export`: a model file (pruned.pt, model.pt) as a file that runs without sosp.

sosp export --pruned runs/r56-sosp_i/0.5/pruned.pt --to onnx
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from sosp import data, exporting, paths
from sosp.commands.base import Command, check_out_file, resolve_device
from sosp.errors import BadInput

EPILOG = f"""\
The file holds the network's computation and weights, so it runs where sosp is not
installed, at any batch size. Inputs are [batch, C, H, W] of the model file's dataset,
pixels in [0, 1] normalized by the dataset's mean and std (printed when it is written):

  torchscript   torch.jit.load(path)(x)
  pt2           torch.export.load(path).module()(x)
  onnx          onnxruntime.InferenceSession(path).run(None, {{"{exporting.INPUT}": x}})[0]

Before writing, the file is run on a random batch of another size than the traced one and
compared with the network; the largest difference is printed. --to onnx needs the packages of
pip install 'sosp[export]'. TorchScript is deprecated by PyTorch; pt2 is its successor.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--pruned",
        required=True,
        metavar="FILE",
        help=f"a model file written by sosp: {paths.PRUNED} from `sosp prune`, or "
        f"{paths.MODEL} from `sosp train` / `sosp finetune`",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="{" + ",".join(exporting.FORMATS) + "}",
        help="the format: onnx (onnxruntime and other ONNX runtimes), torchscript "
        "(torch.jit.load, also from C++ libtorch) or pt2 (torch.export.load)",
    )
    p.add_argument(
        "--out",
        help="where to write it (default: beside FILE, its suffix replaced by "
        + ", ".join(exporting.SUFFIXES.values())
        + ")",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=2,
        help="batch size of the example input the network is traced with, at least 2 "
        "(default 2); the file accepts any batch size",
    )
    p.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold each BatchNorm that follows a conv into the conv's weights and bias before "
        "exporting (the same outputs in eval mode, without the BatchNorm ops)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="device the network is traced on and its weights are stored for: cpu (default; "
        "loads anywhere), cuda, cuda:1, auto",
    )


def run(args: argparse.Namespace) -> int:
    fmt = exporting.check_format(args.to)
    exporting.check_batch_size(args.batch_size)
    source = Path(args.pruned)
    out = Path(args.out) if args.out else exporting.default_path(source, fmt)
    if out.resolve() == source.resolve():
        raise BadInput(f"--out {out} is the model file itself; choose another path")
    paths.refuse_mask_file(source)
    if source.is_file() and not zipfile.is_zipfile(source):  # load_checkpoint's message would
        # print the whole unpickling error and advise deleting the file (a mask.json, say)
        raise BadInput(
            f"{source} is not a model file written by sosp ({paths.PRUNED}, {paths.MODEL}), "
            "or a truncated one: it is no complete torch.save archive"
        )
    check_out_file(out)
    ckpt = paths.read_model_file(source)
    net = paths.model_from_file(ckpt, source)  # checks the file's keys, dataset included
    meta = data.info(ckpt["dataset"])
    net = net.to(resolve_device(args.device))
    if args.fold_bn:
        net = exporting.folded_batchnorm(net)
    diff = exporting.export(net, meta.input_shape, fmt, out, args.batch_size)
    shape = ", ".join(map(str, meta.input_shape))
    print(
        f"wrote {out} ({fmt}): input [batch, {shape}] at any batch size, pixels in [0, 1] "
        f"normalized by mean {_floats(meta.mean)} and std {_floats(meta.std)}; largest "
        f"difference to the network on a batch of {args.batch_size + 1}: {diff:.2g}"
    )
    return 0


def _floats(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


COMMAND = Command(add_arguments, run)
