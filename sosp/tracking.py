"""Optional Weights & Biases logging. Nothing downstream reads from W&B: the run folder is the
record. `disabled` (the default) never imports wandb; `offline` writes the W&B run files under
the run folder (sync later with `wandb sync`); `online` needs a login and the network."""

from __future__ import annotations

from pathlib import Path

from sosp.errors import BadInput

MODES = ("disabled", "offline", "online")


class Logger:
    """`log(metrics, step)` and `finish()`; a no-op when disabled."""

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
        except wandb.errors.UsageError as e:  # no API key, no login, a bad setting
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(
                f"--wandb {mode}: W&B refused to start ({first}); run `wandb login` or set "
                "WANDB_API_KEY, or use --wandb offline (sync later) or disabled"
            ) from e

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
