"""The whole of `sosp.prune` on the device it is given. These tests run on $SOSP_TEST_DEVICE
(default cpu; `benchmarks/gpu_check.sh` runs them with cuda). On the CPU, a model on the
`meta` device makes a tensor made on the CPU meet a meta one and raise the error a GPU would."""

import pytest
import torch

import sosp
from sosp import counting, methods, models
from sosp.selection import Saliency, _greedy_on_device, greedy_order, order, sorted_order
from sosp.structures import analyze
from sosp.surgery import build_pruned

pytestmark = pytest.mark.device


def cpu_batches(n=16, shape=(1, 8, 8), seed=0):
    """Pruning data as a user passes it: CPU tensors, whatever the model's device."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(10, (n,), generator=g)
    return [(x[:8], y[:8]), (x[8:], y[8:])]


@pytest.mark.parametrize("method", methods.names())
def test_prune_returns_a_model_on_the_device_it_was_given(method, device):
    """Every method prunes a ResNet (residual scatters) on the test device with every
    selection path (MAC budget, kernel scaling, BN recalibration); the pruned copy lives and
    runs there, and the report's counts are the pruned copy's."""
    torch.manual_seed(0)
    model = models.create("resnet20", 10, 1, 8).to(device)
    r = sosp.prune(
        model,
        method,
        0.3,
        cpu_batches(),
        exclude="resnet_downsample",
        n_samples=16,
        budget="macs",
        kernel_scaling=True,
        recalibrate_bn=True,
    )
    here = torch.empty(0, device=device).device  # "cuda" names cuda:0 once placed
    assert {p.device for p in r.model.parameters()} == {here}
    assert {b.device for b in r.model.buffers()} == {here}
    with torch.no_grad():
        out = r.model.eval()(torch.randn(2, 1, 8, 8, device=device))
    assert out.device == here and torch.isfinite(out).all()
    assert r.report["after"] == counting.count(r.model, (1, 8, 8)).as_dict()
    assert set(r.report["seconds_by_step"]) >= {"tracing", "saliency", "selection", "surgery"}


def test_selection_follows_the_device_of_q(device):
    """The greedy (Eq. 4) and the sorted orders are the same for saliencies on the test
    device as on the CPU, with kernel-scaling factors made on the CPU; on CUDA also when the
    greedy's steps run as replayed CUDA graphs of a few steps each."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 40, generator=g, dtype=torch.float64)
    q = 0.5 * (A @ A.T).abs() + torch.rand(40, generator=g, dtype=torch.float64).diag()
    layer_of = torch.arange(40) // 10
    caps = torch.tensor([9, 5, 0, 9])
    scale = 1 / torch.tensor([3.0, 1.0, 7.0, 1.0]).repeat_interleave(10)
    want = greedy_order(q, layer_of, caps, scale)
    assert greedy_order(q.to(device), layer_of, caps, scale) == want
    for block in (4, 7):  # on CUDA: 3 steps, CUDA graphs of `block` steps replayed, the rest
        assert _greedy_on_device(q.to(device), layer_of, caps, scale, block) == want
    scores = q.diagonal()
    assert sorted_order(scores.to(device), layer_of, caps) == sorted_order(scores, layer_of, caps)
    for scope in ("global", "local"):
        sal, sal_dev = Saliency(scores=scores), Saliency(scores=scores.to(device))
        assert order(sal_dev, layer_of, caps, scope, scale) == order(
            sal, layer_of, caps, scope, scale
        )


@pytest.mark.parametrize("name", ["resnet20", "densenet40", "mobilenet_v1", "resnet20_zeropad"])
def test_tracing_surgery_and_counting_on_the_meta_device(name):
    """Analysis, surgery and counting make no tensor on a fixed device: on a meta model every
    parameter and buffer of the pruned copy is on meta, and it counts."""
    model = models.create(name, 10, 3, 16).to("meta")
    graph = analyze(model, (3, 16, 16), exclude="resnet_downsample")
    pruned = [idx[0] for idx in graph.layer_structures().values()]
    small = build_pruned(graph, pruned)
    devices = {t.device.type for t in [*small.parameters(), *small.buffers()]}
    assert devices == {"meta"}
    assert counting.count(small, (3, 16, 16)).params < counting.count_params(model)


def _same_within(a: torch.Tensor, b: torch.Tensor, amp: bool) -> None:
    if not a.is_floating_point():
        assert torch.equal(a, b)  # num_batches_tracked
    elif amp:
        assert (a - b).norm() <= 2e-2 * a.norm() + 1e-4
    else:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    ("schedule", "reload", "captures"), [("step", False, 2), ("constant", True, 2)]
)
def test_cuda_graph_step_trains_like_the_eager_step(device, amp, schedule, reload, captures):
    """The captured step against the eager one from the same seed: two epochs of six full
    batches and a short one, the lr x0.1 after the first ("step"), or the optimizer's state
    dict loaded between the epochs as a resume does ("constant" lr: only the load recaptures).
    Weights, BN running statistics, num_batches_tracked (exactly), momentum buffers and the
    epochs' losses agree. Both run the same kernels in the same order on the same data, so what
    differs is cuDNN's run-to-run nondeterminism (atomic adds in weight gradients, choices that
    depend on the workspace): rounding-level in fp32 (no autocast, TF32 alike in both), grown
    over 14 steps, so rtol 1e-4 / atol 1e-5; under bf16 autocast one flipped rounding moves a
    value by 2^-8, so within 2% in norm."""
    if device.type != "cuda":
        pytest.skip("needs CUDA")
    from tests.test_graphed_step import momentum, two_epochs

    eager = two_epochs(device, "eager", amp=amp, schedule=schedule, reload=reload)
    graph = two_epochs(device, "graph", amp=amp, schedule=schedule, reload=reload)
    step = graph[2]
    assert (step.warmup_steps, step.captures, step.replays, step.eager_steps) == (3, captures, 9, 2)
    se, sg = eager[0].state_dict(), graph[0].state_dict()
    assert se.keys() == sg.keys()
    for k in se:
        _same_within(se[k], sg[k], amp)
    assert sg["1.num_batches_tracked"].item() == 14
    for a, b in zip(momentum(eager[1]), momentum(graph[1]), strict=True):
        _same_within(a, b, amp)
    for re, rg in zip(eager[3], graph[3], strict=True):
        assert re["lr"] == rg["lr"]
        assert rg["train_loss"] == pytest.approx(re["train_loss"], rel=2e-2 if amp else 1e-4)


def test_rounds_and_probes_run_on_the_device_of_the_model(device):
    """Pruning in rounds (a round of a gradient-flow measure, the mask kept after a step) and
    the gradient-flow measurements work on a model on the test device with CPU-made samples,
    and leave every parameter there."""
    from sosp.flow_probe import FlowProbe
    from sosp.rounds import RoundPruner, RoundsPlan
    from sosp.settings import PruneSettings

    torch.manual_seed(0)
    model = models.create("resnet20", 10, 1, 8).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    plan = RoundsPlan("grad_norm", 0.3, settings=PruneSettings(n_samples=16))
    pruner = RoundPruner(plan, cpu_batches(), (1, 8, 8))
    probe = FlowProbe([1], cpu_batches(), (1, 8, 8), 16)
    probe._write = lambda: None  # no run folder here
    for hook in (pruner, probe):
        hook.start(model, opt, "unused")
    x, y = cpu_batches()[0]
    torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
    opt.step()
    row = pruner.after_epoch(1, model, opt)
    pruner.after_step(model, opt)
    probe.after_epoch(1, model, opt)
    here = torch.empty(0, device=device).device
    assert row["structures_removed"] == pytest.approx(0.3, abs=0.005)
    assert {p.device for p in model.parameters()} == {here}
    assert all(keep.device == here for _, keep in pruner.keep)
    assert -1 <= probe.records[0]["correlation"]["hg_vs_g"]["pearson"] <= 1


@pytest.mark.parametrize("method", ["sosp_i", "sosp_h"])
def test_latency_budget_on_the_device_it_was_given(method, device, tmp_path):
    """A latency table measured on the test device, and a latency budget pruned with it there:
    every input the table times, the selection from saliencies on the device (SOSP-I's Q
    included) and the report's measurement follow the model's device."""
    from sosp.latency_table import dense_kept, measure

    torch.manual_seed(0)
    model = models.create("resnet20", 10, 1, 8).to(device)
    table = measure(model, (1, 8, 8), device, batch=4, step=8, repeats=1, warmup=0)
    for op in table.ops.values():  # times that grow with the channels, whatever the noise
        outs = op.outputs or [1]
        op.ms = [[0.01 * i * o for o in outs] for i in op.inputs]
    table.offset_ms, table.group_factors = 1.0, {}
    graph = analyze(model, (1, 8, 8))
    table.ops_dense_ms = table.ops_ms(lambda t: dense_kept(graph, t))
    table.dense_ms = 1.0 + table.ops_dense_ms  # predicted = 1 ms + S
    table.save(tmp_path / "table.json")
    r = sosp.prune(
        model, method, 0.1, cpu_batches(), n_samples=16, coupling="stream",
        budget="latency", latency_table=str(tmp_path / "table.json"), latency_corrections=0,
    )  # fmt: skip
    here = torch.empty(0, device=device).device
    assert {p.device for p in r.model.parameters()} == {here}
    lat = r.report["latency"]
    assert lat["measured_on"]["device"] == here.type
    assert lat["predicted_removed"] >= 0.1 and lat["measured_ms"] > 0


def test_batch_size_auto_probes_on_the_device_of_the_model(device):
    """`--batch-size auto` probes SOSP-H and SOSP-I on a model on the test device with
    CPU-made samples, measuring there (CUDA: the allocator's peak, which holds the chosen
    batch's own pass within the budget)."""
    from sosp import batch_size

    model = models.create("resnet20", 10, 1, 8).to(device)
    x, y = cpu_batches()[0]
    for method in ("sosp_h", "sosp_i"):
        chosen = batch_size.for_method(model, method, (x, y))
        assert chosen.per_sample_bytes > 0 and chosen.batch_size >= 1
        assert chosen.measured == ("allocator peak" if device.type == "cuda" else "saved tensors")
