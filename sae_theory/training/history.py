"""What :func:`~sae_theory.training.train` returns: the :class:`History` of logged steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["History"]


@dataclass
class History:
    """What :func:`~sae_theory.training.train` returns: one row per logged step.

    Every row has ``step``, ``loss``, ``lr``, ``l0`` (mean number of non-zero codes per row,
    :func:`sae_theory.metrics.l0`) and the model's ``TrainOutput.metrics`` (the trainer's keys win
    on a name clash), plus ``grad_norm`` (before clipping) when ``grad_clip`` is set.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    """Logged rows, in step order (a resumed run continues the saved rows)."""
    steps_run: int = 0
    """Last completed step (counting the steps before a resume)."""
    input_scale: float | None = None
    """The constant c of ``input_norm="scale"``; None otherwise."""

    def to_frame(self) -> "pd.DataFrame":
        """The rows as a tidy pandas DataFrame, one row per logged step."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def last(self, key: str) -> Any:
        """The most recent logged value of ``key``; KeyError if no row has it."""
        for row in reversed(self.rows):
            if key in row:
                return row[key]
        known = sorted({k for r in self.rows for k in r})
        raise KeyError(f"no History row has {key!r}; logged keys: {known}.")

    def __len__(self) -> int:
        return len(self.rows)
