"""Where a training run starts: fresh, resumed (``--resume``) or fine-tuned (``--init``).

:func:`read_start` reads the checkpoint a run starts from, checks it, and returns a
:class:`Start`: its payload, card, training state (resumed runs only) and the dataset rule
with the card's classes, so the chips are read as the model reads them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.errors import CheckpointError, InputError, OutputExistsError

if TYPE_CHECKING:  # pragma: no cover
    from geounet.model import ModelCard
    from geounet.training.layout import DatasetConfig

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class OutputPaths:
    """The files of a run, named after the best checkpoint ``best`` (``model.pt``)."""

    best: Path
    last: Path
    log: Path
    plot: Path

    @property
    def selected(self) -> Path:
        """Where ``refit`` keeps the validation-selected checkpoint (``model.selected.pt``)."""
        return self.best.with_name(self.last.name.replace(".last.pt", ".selected.pt"))


def run_paths(out: PathLike) -> OutputPaths:
    """The files written next to the best checkpoint ``out`` (``model.pt``): ``model.last.pt``,
    ``model.log.csv``, ``model.curves.png``."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return OutputPaths(out, out.with_name(f"{stem}.last.pt"), out.with_name(f"{stem}.log.csv"),
                       out.with_name(f"{stem}.curves.png"))


def check_outputs(paths: OutputPaths, overwrite: bool, resume: PathLike | None) -> None:
    """Refuse to replace an existing best checkpoint unless overwriting or resuming."""
    if paths.best.exists() and not (overwrite or resume is not None):
        raise OutputExistsError(
            f"checkpoint {str(paths.best)!r} exists; choose another --out, pass --overwrite, "
            "or --resume its .last.pt."
        )


@dataclass(frozen=True)
class Start:
    """The checkpoint a run starts from (none for a fresh run).

    Attributes
    ----------
    source : the checkpoint resumed or fine-tuned from (None: a fresh run).
    fine_tune : ``source`` is an ``--init`` checkpoint: a new run from its weights.
    payload : the checkpoint's contents (weights, card, extra).
    card : its model card.
    train_state : the resumed run's optimizer, scheduler, history and RNG state (resume only).
    dataset : the dataset rule, with the card's classes when a checkpoint is given.
    """

    source: PathLike | None = None
    fine_tune: bool = False
    payload: dict[str, Any] | None = None
    card: ModelCard | None = None
    train_state: dict[str, Any] | None = None
    dataset: DatasetConfig | None = None


def read_start(resume: PathLike | None, init: PathLike | None,
               dataset: DatasetConfig | None) -> Start:
    """Read and check the checkpoint a run continues (``resume``) or fine-tunes (``init``)."""
    start = _read_resume(resume, dataset)
    if init is not None:
        start = _read_init(init, resume, start.dataset)
    return start


def _read_resume(resume: PathLike | None, dataset: DatasetConfig | None) -> Start:
    """The checkpoint resumed from: its payload, training state, card and dataset rule."""
    from geounet.model import ModelCard, read_checkpoint
    from geounet.training.layout import DatasetConfig

    if resume is None:
        return Start(dataset=dataset)
    payload = read_checkpoint(resume)
    state = (payload.get("extra") or {}).get("train_state")
    if not isinstance(state, dict) or "optimizer" not in state:
        raise CheckpointError(
            f"checkpoint {str(resume)!r} has no training state (optimizer, epoch); resume "
            "from the .last.pt written by geounet train."
        )
    card = ModelCard.from_dict(payload["card"])
    if dataset is None or dataset.classes is None:  # read the labels as the model did
        dataset = dataclasses.replace(dataset or DatasetConfig(), classes=card.classes)
    return Start(resume, False, payload, card, state, dataset)


def _read_init(init: PathLike, resume: PathLike | None,
               dataset: DatasetConfig | None) -> Start:
    """The checkpoint fine-tuned from: its payload, card, and the dataset rule with the
    card's classes (the chips are read as the model reads them)."""
    from geounet.model import ModelCard, read_checkpoint
    from geounet.training.layout import DatasetConfig

    if resume is not None:
        raise InputError(
            f"--init {str(init)!r} and --resume {str(resume)!r} both given: --resume continues "
            "a run (its epoch, optimizer and schedule), --init starts a new run from a "
            "checkpoint's weights; pass one of them."
        )
    payload = read_checkpoint(init)
    card = ModelCard.from_dict(payload["card"])
    if dataset is not None and dataset.classes is not None and \
            tuple(dataset.classes) != tuple(card.classes):
        raise CheckpointError(
            f"checkpoint {str(init)!r} predicts classes {list(card.classes)} but the chips are "
            f"read as {list(dataset.classes)}; fine-tuning keeps the model's classes: label "
            f"the chips with {','.join(card.classes)} (--classes), or train a new model "
            "without --init."
        )
    dataset = dataclasses.replace(dataset or DatasetConfig(), classes=card.classes)
    return Start(init, True, payload, card, None, dataset)
