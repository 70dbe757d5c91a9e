"""What happens when a run goes wrong: a NaN or inf stops it before it reaches the weights or a
checkpoint, and Ctrl-C or SIGTERM leaves a checkpoint to resume from."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from snn.errors import NonFiniteError  # noqa: F401 (re-exported)

ADVICE = "Lower optimizer.lr, set trainer.gradient_clip_val, or check the data."



def _last_good_checkpoint(trainer: L.Trainer) -> str:
    """The checkpoint file written most recently by any ModelCheckpoint, or ''."""
    paths = [Path(p) for c in trainer.checkpoint_callbacks for p in (c.last_model_path, c.best_model_path) if p]
    paths = [p for p in paths if p.is_file()]
    return str(max(paths, key=lambda p: p.stat().st_mtime).resolve()) if paths else ""


def _group_finite(group: list[torch.Tensor]) -> torch.Tensor:
    """Whether every value of ``group`` (tensors of one device and dtype) is finite, as a 0-d tensor."""
    if group[0].device.type == "cpu":
        total = torch.stack([t.sum() for t in group]).sum().isfinite()
        if bool(total):  # no device to sync with on CPU
            return total
    return torch.stack(torch._foreach_norm(group, math.inf)).amax().isfinite()


def all_finite(tensors: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """A boolean tensor, true when every floating-point tensor is free of NaN and inf (None: none given).

    Per device and dtype, the max-abs norm of every tensor (one ``_foreach_norm``), reduced on the
    device: reading the result is the only host sync, and huge but finite values never overflow into
    a false alarm. On CPU, where the max-abs norm costs many times a sum (benchmarks/RESULTS.md,
    "Monitoring overhead"), a plain sum of all values comes first (NaN and inf propagate through
    it); only a non-finite sum, which finite values can also give by overflowing, is confirmed with
    the exact max-abs check.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        if t.is_floating_point() and t.numel():
            groups[(t.device, t.dtype)].append(t.detach())
    flags = [_group_finite(group) for group in groups.values()]
    if not flags:
        return None
    return torch.stack([f.to(flags[0].device) for f in flags]).all()


def _optimizer_states(trainer: L.Trainer) -> Iterator[torch.Tensor]:
    for optimizer in trainer.optimizers:
        for state in optimizer.state.values():
            yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def _named_state(trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[tuple[str, torch.Tensor]]:
    """What a checkpoint stores as tensors: the module's parameters and buffers, the optimizer states."""
    yield from pl_module.state_dict(keep_vars=True).items()
    for i, optimizer in enumerate(trainer.optimizers):
        names = {id(p): n for n, p in pl_module.named_parameters()}
        for param, state in optimizer.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    yield f"optimizer {i} {key} of {names.get(id(param), '?')}", value


def _describe_bad(named: Iterable[tuple[str, torch.Tensor]], limit: int = 3) -> str:
    """'name (k of n values)' for the first ``limit`` non-finite tensors (only on the failure path)."""
    bad = [(n, t) for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    shown = [f"{n} ({int((~torch.isfinite(t)).sum())} of {t.numel()} values)" for n, t in bad[:limit]]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return ", ".join(shown) + more if shown else "on another process"


class NonFiniteGuard(L.Callback):
    """Stops training at the first NaN or inf, before any checkpoint can store it.

    Two checks per training step, each one fused reduction on the device:

    - before the optimizer step: the loss and the gradients (the gradients are left to the
      GradScaler under 16-bit mixed precision, which skips steps with inf gradients by design);
    - after the step (``on_train_batch_end``, before validation and before any ModelCheckpoint can
      write): the parameters, buffers (e.g. batch-norm statistics) and optimizer states, all that a
      checkpoint stores.

    Reading a check's answer is a host sync (and, with several processes, an all-reduce, so that all
    ranks stop together). The answers are read every ``check_every`` training steps, default 1 on
    the CPU (each check read where it is made: a bad loss or gradient stops training before the
    optimizer step), where a read costs nothing, and ``trainer.log_every_n_steps`` on a GPU, where
    each read would stall the queue of kernels the CPU launched ahead. Between reads the device
    keeps the first step that went bad, what went bad and the loss then (no host sync); the
    answers are also read before every checkpoint is written (``on_save_checkpoint``: a raise there
    writes nothing), before validation and at the end of training. So no checkpoint ever stores a
    non-finite state; with ``check_every`` above 1, the weights a bad step corrupted stay in the
    process, which stops within ``check_every`` steps.

    Raises ``NonFiniteError`` naming the epoch, the global step and the batch where it first went
    bad, what went bad (with ``check_every`` above 1 also the step whose read found it), and the
    last checkpoint written, which is good: every checkpoint is written after a passed read.
    """

    LOSS, GRADIENTS, STATE = 1, 2, 3  # what went bad, as the device keeps it

    def __init__(self, check_every: int | None = None):
        super().__init__()
        if check_every is not None and (isinstance(check_every, bool) or not isinstance(check_every, int)
                                        or check_every < 1):
            raise ValueError(f"NonFiniteGuard(check_every={check_every!r}): set a number of training steps >= 1, "
                             "or null for 1 on the CPU and trainer.log_every_n_steps on a GPU.")
        self.check_every = check_every
        self.batch_idx = -1
        self.step = 0
        self.reads = 0  # host reads of the checks so far (what the tests count)
        self._loss_finite: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None
        self._first: torch.Tensor | None = None  # [step, what, loss] of the first bad step; step -1: none
        self._places: dict[int, tuple[int, int]] = {}  # global step -> (epoch, batch) since the last read

    def every(self, trainer: L.Trainer, device: torch.device) -> int:
        """Training steps between reads on ``device`` (see the class docstring)."""
        if self.check_every is not None:
            return self.check_every
        return 1 if device.type == "cpu" else max(1, int(trainer.log_every_n_steps or 1))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.batch_idx, self.step = batch_idx, trainer.global_step
        self._places[self.step] = (trainer.current_epoch, batch_idx)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()  # no sync: kept with the gradients' flag
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        loss_finite, self._loss_finite = self._loss_finite, None
        checks = [] if loss_finite is None else [loss_finite]
        if getattr(trainer.precision_plugin, "scaler", None) is None:
            grads = all_finite(p.grad for p in pl_module.parameters() if p.grad is not None)
            if grads is not None:
                checks.append(grads.to(checks[0].device) if checks else grads)
        if not checks:
            return
        good = torch.stack(checks).all()
        what = torch.full((), float(self.GRADIENTS), device=good.device)
        if loss_finite is not None:
            what = torch.where(loss_finite.to(good.device), what, float(self.LOSS))
        self._record(good, what, self._loss)
        if (self.step + 1) % self.every(trainer, good.device) == 0:
            self.read(trainer, pl_module, before_optimizer_step=True)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        finite = all_finite([*pl_module.state_dict(keep_vars=True).values(), *_optimizer_states(trainer)])
        if finite is None:
            return
        self._record(finite, torch.full((), float(self.STATE), device=finite.device), None)
        if (self.step + 1) % self.every(trainer, finite.device) == 0:
            self.read(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint) -> None:
        if trainer.state.fn == "fit":
            self.read(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.read(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.read(trainer, pl_module)

    def _record(self, good: torch.Tensor, what: torch.Tensor, loss: torch.Tensor | None) -> None:
        """Keeps ``[step, what, loss]`` of the first step that went bad, on the device."""
        device = good.device
        if loss is not None and loss.numel() == 1:
            value = loss.detach().reshape(()).to(device=device, dtype=torch.float64)
        else:
            value = torch.full((), math.nan, dtype=torch.float64, device=device)
        now = torch.stack([torch.full((), float(self.step), dtype=torch.float64, device=device),
                           what.to(torch.float64), value])
        if self._first is None:
            self._first = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)
        self._first = torch.where(~good & (self._first[0] < 0), now, self._first.to(device))

    def read(self, trainer: L.Trainer, pl_module: L.LightningModule, before_optimizer_step: bool = False) -> None:
        """Reads the checks kept since the last read (one host sync; with several processes one
        all-reduce, on every rank at the same steps); raises NonFiniteError if a step went bad on
        any process. ``before_optimizer_step``: called where the current step's optimizer step has
        not run yet."""
        self.reads += 1
        first = None if self._first is None else self._first.tolist()
        bad = first is not None and first[0] >= 0
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            self._places = {self.step: self._places.get(self.step, (trainer.current_epoch, self.batch_idx))}
            return
        if not bad:
            self._stop(trainer, f"The loss, the gradients or the model's state became non-finite on another "
                                f"process by {self._where(trainer, self.step)}; training stopped")
        step, what, loss = int(first[0]), int(first[1]), first[2]
        where = self._where(trainer, step)
        in_time = step == self.step and (before_optimizer_step or what == self.STATE)
        if not in_time:
            found = "after its optimizer step" if step == self.step else f"at global step {self.step}"
            every = self.every(trainer, self._first.device)
            where += f" (found {found}: the guard reads its checks every {every} steps)"
        stopped = "training stopped" + (" before the optimizer step" if in_time else "")
        if what == self.LOSS:
            self._stop(trainer, f"Training loss became {loss} {where}; {stopped}")
        if what == self.GRADIENTS:
            grads = ((n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None)
            self._stop(trainer, f"Gradients became non-finite {where}: {_describe_bad(grads)}; {stopped}")
        self._stop(trainer, f"The model's state became non-finite in the training step {where}: "
                            f"{_describe_bad(_named_state(trainer, pl_module))}; training stopped before any "
                            "checkpoint could store it")

    def _where(self, trainer: L.Trainer, step: int) -> str:
        epoch, batch = self._places.get(step, (trainer.current_epoch, self.batch_idx))
        return f"at epoch {epoch}, global step {step} (batch {batch} of the epoch)"

    def _stop(self, trainer: L.Trainer, message: str) -> None:
        last = _last_good_checkpoint(trainer)
        kept = f"The last good checkpoint is kept: {last}" if last else "No checkpoint had been written yet"
        raise NonFiniteError(f"{message}. {kept}. {ADVICE}")


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C (SIGINT) or SIGTERM (``kill``, a container stop, a scheduler's preemption), saves
    ``<dirpath>/interrupted.ckpt`` before Lightning stops.

    SIGTERM is Lightning's to catch: it sets ``trainer.received_sigterm`` and stops the loops at the
    next batch with a ``SIGTERMException`` (a SystemExit), which train.py turns into exit code 143.
    Resume with ``snn-train ckpt_path=<dirpath>/interrupted.ckpt`` (same config). A checkpoint
    taken mid-epoch resumes mid-epoch: it repeats the interrupted run closely but not bit for bit
    (the data order of the interrupted epoch starts over); end-of-epoch checkpoints resume exactly.
    A state that is not finite (interrupted between an optimizer step and its check) is not saved.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted.ckpt"):
        super().__init__()
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        sigterm = isinstance(exception, SystemExit) and trainer.received_sigterm
        if not (isinstance(exception, KeyboardInterrupt) or sigterm) or trainer.state.fn != "fit":
            return
        what = "Terminated (SIGTERM)" if sigterm else "Interrupted"
        finite = all_finite([*pl_module.state_dict(keep_vars=True).values(), *_optimizer_states(trainer)])
        if finite is not None and not trainer.strategy.reduce_boolean_decision(bool(finite), all=True):
            rank_zero_info(f"{what} at epoch {trainer.current_epoch}, step {trainer.global_step}: the model's state "
                           f"is not finite, so {self.path.name} was not saved.")
            return
        trainer.save_checkpoint(self.path)
        rank_zero_info(
            f"{what} at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {self.path.resolve()}; "
            f"resume with: snn-train <same overrides> ckpt_path={self.path.resolve()}"
        )
