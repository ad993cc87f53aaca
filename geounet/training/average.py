"""The exponential moving average of a model's weights, validated and saved in training."""

from __future__ import annotations

from typing import Any


class WeightAverage:
    """Exponential moving average of a model's weights and buffers (BatchNorm statistics).

    After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so the average
    follows the early, fast-moving weights closely and smooths the late ones: validated and
    saved instead of the raw weights, it keeps the late validation curve steady.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> avg = WeightAverage(net, 0.9)
    >>> avg.update(net); avg.updates
    1
    """

    def __init__(self, model: Any, decay: float) -> None:
        import copy

        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.updates = 0

    def load(self, state_dict: Any, updates: int) -> None:
        """Restore an average saved in a checkpoint after ``updates`` updates."""
        self.model.load_state_dict(state_dict)
        self.updates = updates

    def update(self, model: Any) -> None:
        """Move the average towards ``model``'s current weights and buffers."""
        import torch

        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            ours = self.model.state_dict()
            floats, targets = [], []
            for name, value in model.state_dict().items():
                if value.dtype.is_floating_point:
                    floats.append(ours[name])
                    targets.append(value.detach())
                else:
                    ours[name].copy_(value)
            if floats:  # one multi-tensor lerp (torch's foreach form) for all weights
                torch._foreach_lerp_(floats, targets, 1.0 - decay)
