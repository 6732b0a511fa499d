"""A network as a file that runs without sosp: TorchScript, torch.export (.pt2) or ONNX.

The pruned network is an fx GraphModule that may hold sosp's own modules (`ChannelScatter`,
`Subsample`); each format stores the computation itself, so loading the file needs torch (or
onnxruntime) only:

    torchscript   torch.jit.load(path)(x)
    pt2           torch.export.load(path).module()(x)
    onnx          onnxruntime.InferenceSession(path).run(None, {"input": x.numpy()})[0]

The batch dimension is dynamic in all three. Before anything is written, the file is loaded
back from memory and run on a batch of another size than the traced one; a file that does
not reproduce the network is not written. `folded_batchnorm` gives the inference network with
every BatchNorm that follows a conv folded into the conv's weights and bias (no BatchNorm op
left; faster at small batches, not always at large ones).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sosp.errors import BadInput, MissingExtra
from sosp.io import atomic_write
from sosp.modes import eval_mode

FORMATS = ("onnx", "torchscript", "pt2")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}
ONNX_PACKAGES = ("onnx", "onnxruntime")  # onnxruntime for the check before writing
INPUT, OUTPUT = "input", "output"  # the ONNX graph's input and output names

# The exported file must match the network to this, relative to the largest output (float32
# round-off is ~1e-6; TF32 convolutions on a GPU against onnxruntime on the CPU ~1e-4).
CHECK_TOLERANCE = 1e-3


def check_format(fmt: str) -> str:
    """`fmt` if it is one of `FORMATS`, else a BadInput naming them; for onnx, a MissingExtra
    when its packages are not installed."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ONNX_PACKAGES if not _importable(name)]
        if missing:
            raise MissingExtra(f"--to onnx needs {', '.join(missing)}: pip install 'sosp[export]'")
    return fmt


def check_batch_size(batch_size: int) -> int:
    """`batch_size` if it is at least 2, else a BadInput (torch.export fixes a dimension of
    size 1 to a constant)."""
    if batch_size < 2:
        raise BadInput(f"--batch-size must be at least 2, not {batch_size}")
    return batch_size


def folded_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` (an fx-traceable network, such as every network sosp prunes)
    with each BatchNorm that directly follows a conv folded into that conv (torch.fx's `fuse`:
    W' = W * gamma / sqrt(var + eps) per output channel, b' likewise), so the copy computes the
    same function in eval mode with the BatchNorm modules gone. `net` is left as it is."""
    from torch.fx.experimental.optimization import fuse

    was_training = net.training
    try:
        # A pruned network is already a GraphModule: fuse its graph as it is (re-tracing
        # would step into sosp's modules, whose forward fx cannot always trace).
        folded = fuse(net.eval(), no_trace=isinstance(net, torch.fx.GraphModule))
    except Exception as e:  # fx tracing of a network with data-dependent control flow
        raise BadInput(
            f"could not fold BatchNorm: torch.fx cannot trace {type(net).__name__} "
            f"({type(e).__name__}: {e}); export it without --fold-bn"
        ) from e
    finally:
        net.train(was_training)
    return folded.eval()


def default_path(model_file: str | os.PathLike, fmt: str) -> Path:
    """Beside the model file, its suffix replaced: pruned.pt -> pruned.onnx,
    pruned.torchscript.pt, pruned.pt2."""
    path = Path(model_file)
    return path.with_name(path.stem + SUFFIXES[fmt])


def export(
    net: nn.Module,
    input_shape: tuple[int, ...],
    fmt: str,
    path: str | os.PathLike,
    batch_size: int = 2,
) -> float:
    """Write `net` (run in eval mode) as a `fmt` file at `path`, atomically. It is traced on a
    random batch of `batch_size` inputs of `input_shape` (C, H, W) on the device of `net`,
    and accepts any batch size. Returns the largest absolute difference between the file's
    and the network's outputs on a random batch of `batch_size + 1`; BadInput (and nothing
    written) when the difference exceeds `CHECK_TOLERANCE` relative to the outputs."""
    check_format(fmt)
    check_batch_size(batch_size)
    first = next(iter(net.parameters()), torch.empty(0))
    g = torch.Generator().manual_seed(0)

    def batch(n: int) -> torch.Tensor:
        x = torch.randn(n, *input_shape, generator=g, dtype=first.dtype)
        return x.to(first.device)

    example, probe = batch(batch_size), batch(batch_size + 1)
    with eval_mode(net):
        blob = _WRITERS[fmt](net, example)
        with torch.no_grad():
            want = net(probe)
            got = _RUNNERS[fmt](blob, probe).to(want.device, want.dtype)
    if got.shape != want.shape:
        raise BadInput(
            f"the {fmt} file gives outputs of shape {tuple(got.shape)} on a batch of "
            f"{len(probe)}, the network {tuple(want.shape)}; nothing written"
        )
    diff = (got - want).abs().max().item()
    if not diff <= CHECK_TOLERANCE * max(1.0, want.abs().max().item()):
        raise BadInput(
            f"the {fmt} file differs from the network by up to {diff:.3g} on a batch of "
            f"{len(probe)}; nothing written"
        )
    atomic_write(path, lambda f: f.write(blob))
    return diff


# -- one writer and one runner per format ------------------------------------------------------
# A writer returns the file's bytes; a runner loads such bytes and runs them on a batch.


def _torchscript(net: nn.Module, example: torch.Tensor) -> bytes:
    # Traced, not scripted: ChannelScatter's `*x.shape[2:]` does not script. The trace records
    # x.shape[0] as an operation, so the batch stays dynamic; `export` checks that on another
    # batch size (which check_trace, re-running the same input, would not).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.trace is deprecated"
        traced = torch.jit.trace(net, (example,), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _run_torchscript(blob: bytes, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(io.BytesIO(blob), map_location=x.device)(x)


def _exported(net: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(net, (example,), dynamic_shapes=({0: batch},))


def _pt2(net: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.export.save(_exported(net, example), buf)
    return buf.getvalue()


def _run_pt2(blob: bytes, x: torch.Tensor) -> torch.Tensor:
    return torch.export.load(io.BytesIO(blob)).module()(x)


def _onnx(net: nn.Module, example: torch.Tensor) -> bytes:
    # The TorchScript-based exporter (dynamo=False): deprecated since torch 2.9 but present in
    # the pinned 2.14; it needs only `onnx` and takes ~1 s on a ResNet-20, against ~7 s and
    # onnxscript for the torch.export-based one (dynamo=True, which works as well: switch when
    # torch drops this one). Like torchscript it traces; `export` checks the dynamic batch.
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy ... ONNX export"
        torch.onnx.export(
            net,
            (example,),
            buf,
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    return buf.getvalue()  # weights inside: one self-contained file


def _run_onnx(blob: bytes, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT: x.detach().cpu().numpy()})[0])


_WRITERS: dict[str, Callable[[nn.Module, torch.Tensor], bytes]] = {
    "onnx": _onnx,
    "torchscript": _torchscript,
    "pt2": _pt2,
}
_RUNNERS: dict[str, Callable[[bytes, torch.Tensor], torch.Tensor]] = {
    "onnx": _run_onnx,
    "torchscript": _run_torchscript,
    "pt2": _run_pt2,
}


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
