"""What every training loop shares: the guards (so a failed step always ends in the same one-line
advice), the run's start (device, process group, checkpoint) and the step loop itself (intervals for logs,
previews, evaluations and saves; Ctrl-C; the processes of a multi-process run kept in step)."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from facelab.core.batches import batch_stream, stop_workers
from facelab.core.checkpoint import resume_checkpoint
from facelab.core.config import check_fixed_unchanged
from facelab.core.device import autocast
from facelab.core.distributed import Group, join
from facelab.core.errors import FacelabError
from facelab.core.files import ensure_folder
from facelab.core.memory import keep_freed_memory
from facelab.core.progress import progress
from facelab.core.rng import seed_everything
from facelab.core.training_view import take_requests

log = logging.getLogger("facelab")


@contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM for the block, which gets the list that the signals arriving meanwhile are put
    in. Outside the main thread (where signals cannot be handled) nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def finish_step_first() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block (one training step and its bookkeeping) is done, then stop.

    Interrupted halfway, a step leaves weights that moved while the counter and loss log did not, and a
    save would pair them: the resumed run would redo that step and no longer match an uninterrupted one.
    A step takes well under a second to a few seconds, the wait a user sees.
    """
    with deferred_signals() as pending:
        yield
    if pending:
        raise KeyboardInterrupt


def start_run(cfg: Any, saved: Any | None, model_dir: Path) -> Group:
    """What a trainer settles before any work: options that fix the network match the saved run's
    (``saved``, None for a new model dir), this process's place in the run and its device, a precision it
    supports, and the seed."""
    if saved is not None:
        check_fixed_unchanged(saved, cfg, str(model_dir))
    group = join(cfg.device)
    autocast(group.device, cfg.precision)  # refuses fp16 on the CPU before any work
    seed_everything(cfg.seed)
    return group


def open_run_dir(group: Group, checkpoint: Path, what: str = "model dir") -> Path | None:
    """The checkpoint a run resumes from, or None for a new run. The main process creates the folder and
    repairs a save that a kill cut short (:func:`~facelab.core.checkpoint.resume_checkpoint`) while the others
    wait: none of them reads a half-repaired folder, or later removes a save of the main process as stale."""
    group.on_main(lambda: (ensure_folder(checkpoint.parent, what), resume_checkpoint(checkpoint)))
    return checkpoint if checkpoint.is_file() else None


def check_finite_loss(loss: float, iteration: int, saved_iteration: int | None, model_dir: Path,
                      advice: str = "lower --lr") -> None:
    """Stop before a NaN/inf step can reach a save: the weights on disk stay the last good ones."""
    if math.isfinite(loss):
        return
    last = f"iteration {saved_iteration}" if saved_iteration is not None else "none yet"
    raise FacelabError(f"loss became {loss} at iteration {iteration}; stopped without saving, "
                       f"the last good save ({last}) in {model_dir} is kept; {advice}")


@contextmanager
def out_of_memory_as_error(batch_size: int, device: torch.device) -> Iterator[None]:
    """Turn running out of memory into a suggestion of a smaller batch (CUDA raises OutOfMemoryError,
    the CPU allocator a RuntimeError "can't allocate memory")."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "allocate" not in str(exc):
            raise
        raise FacelabError(f"out of memory at batch size {batch_size} on {device}; "
                           f"try --batch-size {max(1, batch_size // 2)}") from None


@dataclass
class Every:
    """``action(iteration)`` after every ``n``-th iteration (``n`` 0: never), outside the step guard. At the
    loop's last iteration: ``"if due"`` like any other, ``"never"`` (the caller's closing save covers it)
    or ``"always"`` (a final figure, due or not)."""

    n: int
    action: Callable[[int], None]
    at_end: str = "if due"

    def due(self, iteration: int, end: float) -> bool:
        if iteration == end and self.at_end != "if due":
            return bool(self.n) and self.at_end == "always"
        return bool(self.n) and iteration % self.n == 0


def _postfix(values: dict[str, float]) -> dict[str, str]:
    return {k: f"{v:.4f}" for k, v in values.items()}


def step_loop(iteration: int, end: float, step: Callable[[Any], dict[str, float]], log_row: Callable[[int, dict], None],
              log_every: int, desc: str, *, fetch: Callable[[], Any] = lambda: None, actions: Sequence[Every] = (),
              after_step: Callable[[int], None] | None = None, log_last: bool = False, unit: str = "it",
              postfix: Callable[[dict[str, float]], dict[str, str]] = _postfix,
              group: Group) -> tuple[int, dict[str, float], str]:
    """The one training loop of every trainer (swap, XSeg, StarGAN, PFE): from ``iteration`` until ``end``,
    ``step(fetch())`` runs one iteration and returns its values; ``log_row(iteration, values)`` writes them
    every ``log_every`` iterations (and at the last with ``log_last``); then each of ``actions`` at its
    cadence and ``after_step(iteration)`` (time-based saves, backups). Those two run on a forked torch RNG:
    a preview or an evaluation never shifts the training's random numbers (in a multi-process run only the
    main process does them, and all processes must draw alike).

    Ctrl-C and SIGTERM wait for the step in hand and its log row (:func:`finish_step_first`), then end the
    loop. Returns (iteration, last values, "target" when ``end`` was reached or "interrupted"); the caller
    saves once afterwards, whichever way the loop ended.

    ``group`` holds the run's processes (:func:`~facelab.core.distributed.join`). In a multi-process run the
    main process alone runs ``actions`` and ``after_step`` and shows the bar (log rows go to a log that only
    the main process writes). Ctrl-C and SIGTERM are held through the whole loop and end it at the first step
    end where any process has one, in every process at the same iteration; a collective that fails because
    another process ended becomes one line, without a save.
    """
    keep_freed_memory()  # the steps reuse their activations' memory instead of faulting it in anew
    values: dict[str, float] = {}
    bar = progress(total=None if math.isinf(end) else int(end), initial=iteration, desc=desc, unit=unit,
                   disable=not group.is_main)
    held = deferred_signals() if group.distributed else contextlib.nullcontext([])
    guard = contextlib.nullcontext if group.distributed else finish_step_first
    rng_devices = [group.device] if group.device.type == "cuda" else []
    try:
        with held as pending:
            while iteration < end:
                batch = fetch()
                with guard():
                    values = step(batch)
                    iteration += 1
                    logged = iteration % log_every == 0 or (log_last and iteration == end)
                    if logged:
                        log_row(iteration, values)
                bar.update()
                bar.set_postfix(postfix(values), refresh=False)
                if group.is_main:
                    try:
                        with torch.random.fork_rng(devices=rng_devices):
                            for every in actions:
                                if every.due(iteration, end):
                                    every.action(iteration)
                            if after_step is not None:
                                after_step(iteration)
                    except KeyboardInterrupt:  # a stop that an action asked for (the training view's)
                        if not group.distributed:
                            raise
                        pending.append(signal.SIGINT)  # ends every process at this step, as Ctrl-C would
                if group.distributed and group.any(bool(pending)):
                    raise KeyboardInterrupt
        stopped = "target"
    except KeyboardInterrupt:
        stopped = "interrupted"
        log.info("interrupted at iteration %d: saving", iteration)
    except RuntimeError as exc:
        lost = group.collective_failed(exc)
        if lost is None:
            raise
        raise lost from None
    finally:
        bar.close()
    return iteration, values, stopped


class SteppedTrainer(Protocol):
    """What :func:`run_steps` drives (the swap and XSeg trainers). ``cfg`` carries ``target_iter``,
    ``batch_size``, ``workers``, ``log_every``, ``preview_every``, ``eval_every``, ``save_every`` and
    ``save_every_minutes``."""

    cfg: Any
    model_dir: Path
    iteration: int
    group: Group
    batches: Any  # a Dataset of batches indexed by iteration
    metrics: Any  # MetricsLog

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]: ...
    def save(self) -> None: ...
    def write_preview(self) -> None: ...
    def report_eval(self) -> Any: ...


def run_steps(trainer: SteppedTrainer, max_steps: int | None, desc: str,
              every_step: Callable[[float], None] | None = None) -> tuple[dict[str, float], str]:
    """:func:`step_loop` for the swap and XSeg trainers: until the target iteration, ``max_steps`` more
    steps, or Ctrl-C; batches from worker processes; preview, evaluation and saves (every ``save_every``
    iterations and every ``save_every_minutes``) at the config's intervals (by the main process),
    ``every_step(now)`` after each step (e.g. for backups).

    After each step the requests of a training view (:mod:`facelab.core.training_view`) are answered:
    save, write a preview, or stop, which ends the loop as Ctrl-C does.

    Returns the last step's losses and how the loop stopped ("target", "limit" or "interrupted"); the
    caller does the final save, so Ctrl-C (and a stop request) always ends in one.
    """
    cfg = trainer.cfg
    end = cfg.target_iter if cfg.target_iter else math.inf
    if max_steps is not None:
        end = min(end, trainer.iteration + max_steps)
    last_save = time.monotonic()
    if trainer.group.is_main:
        take_requests(trainer.model_dir)  # left from an earlier run (or a view with no trainer): not this run's
    stream = iter(batch_stream(trainer.batches, trainer.iteration, cfg.workers))

    def step(batch: dict[str, torch.Tensor]) -> dict[str, float]:
        with out_of_memory_as_error(cfg.batch_size, trainer.group.device):
            losses = trainer.step(batch)
        trainer.iteration += 1
        return losses

    def after_step(iteration: int) -> None:
        nonlocal last_save
        now = time.monotonic()
        requests = take_requests(trainer.model_dir)
        # the loop's last iteration is saved by the caller; a save by either rule restarts the clock
        by_count = cfg.save_every and iteration % cfg.save_every == 0 and iteration != end
        if by_count or now - last_save >= cfg.save_every_minutes * 60 or "save" in requests:
            trainer.save()
            last_save = now
        if "preview" in requests:
            trainer.write_preview()
        if every_step is not None:
            every_step(now)
        if "stop" in requests:
            log.info("the training view asked to stop")
            raise KeyboardInterrupt  # step_loop ends as on Ctrl-C; the caller saves

    try:
        _, losses, stopped = step_loop(
            trainer.iteration, end, step, trainer.metrics.write, cfg.log_every, desc, fetch=lambda: next(stream),
            actions=[Every(cfg.preview_every, lambda i: trainer.write_preview()),
                     Every(cfg.eval_every, lambda i: trainer.report_eval())],
            after_step=after_step, group=trainer.group)
    finally:
        stop_workers(stream)
    if stopped == "target" and trainer.iteration != cfg.target_iter:
        stopped = "limit"
    return losses, stopped
