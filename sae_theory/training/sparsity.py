"""A post-step hook that steers a model's sparsity coefficient toward a target L0.

Penalised SAEs (:class:`~sae_theory.models.ReLUSAE`, :class:`~sae_theory.models.MatryoshkaSAE`:
``l1_coefficient``; :class:`~sae_theory.models.JumpReLUSAE`: ``l0_coefficient``) hold their
coefficient lambda in a buffer. After every step, with l0 the batch's mean number of non-zero codes
(``out.codes``) and t the step,

* during ``warmup_steps``: lambda = ``coefficient * (t + 1) / warmup_steps`` (a linear ramp from
  0; the base coefficient does not adapt yet). The model's own value is used at step 1;
* ``rule="sign"`` (Glen Taggart's controller in Nabeshima's code, the MP-SAE toy's baselines:
  start 0.1, warmup 20% of the steps, rate 3e-4): lambda <- lambda (1 + gain) if l0 >= target,
  else lambda (1 - gain);
* ``rule="log-proportional"``: lambda <- lambda exp(gain clip((l0 - target) / target, -1, 1)),
  an integral controller in log lambda (larger moves when far from the target).

The value is written into the model's buffer (or attribute) ``attribute``; since the buffer is in
the model's state dict, a checkpoint keeps it, and the hook's own state (``state_dict``) keeps the
base coefficient and the history, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from .._checks import check_int, check_real
from ..metrics import l0 as mean_l0

__all__ = ["CONTROLLER_RULES", "SparsityController"]

CONTROLLER_RULES = ("log-proportional", "sign")


@dataclass
class SparsityController:
    """Training hook: steer ``model.<attribute>`` so that the mean L0 settles at ``target_l0``.

    ``history`` holds (step, l0, lambda) every ``log_every`` steps.
    """

    target_l0: float
    """The mean number of active latents per input to reach, > 0."""
    coefficient: float = 0.1
    """Initial (base) coefficient, > 0."""
    gain: float = 0.005
    """Step of the rule: the log-step scale of ``"log-proportional"``, the relative step of ``"sign"``."""
    rule: str = "log-proportional"
    """``"log-proportional"`` or ``"sign"`` (module docstring)."""
    warmup_steps: int = 0
    """Steps of the linear ramp from 0 before the rule starts."""
    attribute: str = "l1_coefficient"
    """Name of the model's coefficient buffer (``"l0_coefficient"`` for JumpReLU)."""
    log_every: int = 50

    def __post_init__(self):
        for name in ("target_l0", "coefficient", "gain"):
            check_real(name, getattr(self, name), minimum=0, include_minimum=False)
        if self.rule not in CONTROLLER_RULES:
            raise ValueError(f"rule must be one of {CONTROLLER_RULES}, got {self.rule!r}.")
        if self.rule == "sign" and self.gain >= 1:
            raise ValueError(f"gain must be < 1 with rule='sign' (lambda is multiplied by 1 - gain), got {self.gain}.")
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("log_every", self.log_every, minimum=1)
        self.history: list[tuple[int, float, float]] = []
        self.current = self.coefficient if self.warmup_steps == 0 else 0.0
        self._checked_model: int | None = None  # id of the model check_model last accepted

    def check_model(self, model) -> None:
        """Raise TypeError unless ``model.<attribute>`` is a coefficient this hook can steer: a
        0-d floating tensor (the penalised SAEs' buffer) or a real number. Run at the hook's first
        call with a model, before anything is written; a caller can run it before training.
        A tensor of any other shape (e.g. ``attribute="W_dec"``) is refused: filling it would
        overwrite weights."""
        name = type(model).__name__
        if not hasattr(model, self.attribute):
            raise TypeError(f"SparsityController needs a model with a {self.attribute!r} coefficient "
                            f"(ReLUSAE, MatryoshkaSAE, TiedReLUSAE: 'l1_coefficient'; JumpReLUSAE: 'l0_coefficient'), got {name}.")
        value = getattr(model, self.attribute)
        if isinstance(value, Tensor):
            if value.dim() != 0 or not value.is_floating_point():
                raise TypeError(f"attribute={self.attribute!r} of {name} is a tensor of shape {tuple(value.shape)} and dtype "
                                f"{value.dtype}; SparsityController steers a scalar coefficient (a 0-d floating buffer).")
        else:
            check_real(f"{name}.{self.attribute}", value)
        self._checked_model = id(model)

    def __call__(self, model, step: int, out) -> None:
        if self._checked_model != id(model):
            self.check_model(model)
        l0 = mean_l0(out.codes)
        if step < self.warmup_steps:
            self.current = self.coefficient * (step + 1) / self.warmup_steps
        else:
            if self.rule == "sign":
                self.coefficient *= (1 + self.gain) if l0 >= self.target_l0 else (1 - self.gain)
            else:
                err = max(-1.0, min(1.0, (l0 - self.target_l0) / self.target_l0))
                self.coefficient *= math.exp(self.gain * err)
            self.current = self.coefficient
        target = getattr(model, self.attribute)
        if isinstance(target, Tensor):
            target.fill_(self.current)
        else:
            setattr(model, self.attribute, self.current)
        if step % self.log_every == 0:
            self.history.append((step, l0, self.current))

    def state_dict(self) -> dict:
        return {"coefficient": self.coefficient, "current": self.current, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.coefficient = float(state["coefficient"])
        self.current = float(state["current"])
        self.history = [tuple(h) for h in state["history"]]
