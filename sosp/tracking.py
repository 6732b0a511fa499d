"""Optional Weights & Biases logging. Nothing downstream reads from W&B: the run folder is the
record. `disabled` (the default) never imports wandb; `offline` writes the W&B run files under
the run folder (sync later with `wandb sync`); `online` needs a login and the network.

Every command's W&B run is described alike, so a dashboard can group and filter train,
finetune, prune and evaluate runs by the same keys: `run_config` makes the config (model,
dataset, method, ratio, seed, budget, params and MACs of the network the run is about, then the
command's own settings), `origin` finds a network's method, ratio and budget from the files
`sosp prune` and `sosp train` wrote beside it, and `run_name` names the run by what it is."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from sosp import paths
from sosp.errors import BadInput
from sosp.io import read_json

MODES = ("disabled", "offline", "online")
# What the network a run is about was made by; `origin` reads it, `run_config` puts it first.
ORIGIN_KEYS = ("method", "ratio", "budget", "prune_at", "seed")
# A network no mask was applied to, as `sosp train` makes it.
DENSE = {"method": "dense", "ratio": 0.0, "budget": None, "prune_at": "none"}


def run_config(
    command: str,
    model: str,
    dataset: str,
    origin: dict,
    counts: dict,
    settings: dict | None = None,
) -> dict:
    """The W&B config of one run of `command` about a `model` network on `dataset`: its
    `origin` (ORIGIN_KEYS: the method, ratio and budget it was pruned by, or `DENSE`; prune_at
    "trained", "init" or "none" as the workflow's records say; the run's seed), its `counts`
    ({"params", "macs"}), then `settings`, the command's own (recipe, loader, prune settings,
    ...). A key already set keeps its value; one that is None (unknown) takes the value
    `settings` give it (e.g. evaluate's --record)."""
    config = {
        "command": command,
        "model": model,
        "dataset": dataset,
        **{k: origin.get(k) for k in ORIGIN_KEYS},
        "params": counts["params"],
        "macs": counts["macs"],
    }
    for key, value in (settings or {}).items():
        if config.get(key) is None:
            config[key] = value
    return config


def run_name(config: dict) -> str:
    """What a run is, from its `run_config`: 'resnet56-cifar10 sosp_h r0.5 s0 finetune';
    'init' after the ratio for a network pruned at initialization; a dense network has no
    ratio ('resnet56-cifar10 dense s0 train'); unknown parts are left out."""
    parts = [f"{config['model']}-{config['dataset']}"]
    method, ratio = config.get("method"), config.get("ratio")
    if method is not None:
        parts.append(str(method))
    if method != "dense" and ratio is not None:
        parts.append(f"r{ratio:g}" if isinstance(ratio, int | float) else f"r{ratio}")
    if config.get("prune_at") == "init":
        parts.append("init")
    if config.get("seed") is not None:
        parts.append(f"s{config['seed']}")
    parts.append(config["command"])
    return " ".join(parts)


def origin(path: str | Path, ckpt: dict) -> dict:
    """The ORIGIN_KEYS of the network in model file `path` (`ckpt`, the file read): one without
    a mask is `DENSE`; a pruned one (pruned.pt) takes them from the report.json beside it, a
    fine-tuned one (a model.pt with a mask) from the report beside the pruned.pt its
    metrics.json names. The seed is the training run's (metrics.json), else the pruning's; a key
    no file tells is None."""
    path = Path(path)
    metrics = _read(paths.metrics(path.parent))
    seed = metrics.get("seed")
    if "mask" not in ckpt:
        return {**DENSE, "seed": seed}
    pruned = metrics.get("config", {}).get("pruned") or path
    found = from_report(_read(paths.report(Path(pruned).parent)))
    return {**found, "seed": seed if seed is not None else found["seed"]}


def from_report(report: dict) -> dict:
    """The ORIGIN_KEYS of the network a prune report (report.json) describes: the method, ratio,
    budget and seed it was pruned with, "trained" or "init" as it had a --checkpoint or not;
    None for what the report lacks."""
    at = None
    if "checkpoint" in report:
        at = "trained" if report["checkpoint"] else "init"
    return {**{k: report.get(k) for k in ORIGIN_KEYS}, "prune_at": at}


def _read(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def check_ready(mode: str) -> None:
    """Refuse, before any work, a `mode` W&B would refuse when a run starts: online with no
    API key or login (read locally; nothing is sent). Every command with --wandb runs it
    before any work (`sosp.commands.base.check_startup`): prune and evaluate start their W&B
    runs only once their results exist, train only once its data is loaded."""
    if mode not in MODES:
        raise BadInput(f"--wandb must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "online" or os.environ.get("WANDB_MODE"):  # the environment overrides --wandb
        return
    import wandb

    with contextlib.redirect_stderr(io.StringIO()):  # its lines about where the key is from
        found = wandb.login(verify=False, prompt=False)
    if not found:
        raise BadInput(_refused(mode, "no API key configured"))


def _refused(mode: str, why: str) -> str:
    return (
        f"--wandb {mode}: W&B refused to start ({why}); run `wandb login` or set "
        "WANDB_API_KEY, or use --wandb offline (sync later) or disabled"
    )


class Logger:
    """`log(metrics, step)`, `summarize(values)` and `finish()`; a no-op when disabled."""

    def __init__(
        self,
        mode: str = "disabled",
        *,
        directory: str | Path = ".",
        project: str = "sosp",
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        config: dict | None = None,
    ):
        if mode not in MODES:
            raise BadInput(f"--wandb must be one of {', '.join(MODES)}, not {mode!r}")
        self.run = None
        if mode == "disabled":
            return
        import wandb

        Path(directory).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                mode=mode,
                dir=str(directory),
                project=project,
                group=group,
                job_type=job_type,
                name=name,
                tags=tags or [],
                config=config or {},
                reinit="finish_previous",
            )
        except wandb.errors.Error as e:  # no API key or login, a bad setting, no network
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(_refused(mode, first)) from e

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summarize(self, values: dict) -> None:
        """Set the run's summary: its results, shown in the runs table (not a time series)."""
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
