"""Losses: pixel-weighted cross-entropy (or BCE) plus soft Dice, and the U-Net border weight map."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from geounet.config import LossType, choices
from geounet.errors import InputError
from geounet.training.metrics import NODATA as IGNORE


def border_weights(
    mask: np.ndarray, object_class: int, *, w0: float = 10.0, sigma: float = 5.0,
    instances: np.ndarray | None = None,
) -> np.ndarray:
    """U-Net border term ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` on non-object pixels.

    ``d1``, ``d2`` are the distances (px) to the nearest and second-nearest object of class
    ``object_class`` (4-connected components, or the given ``instances`` ids on its pixels),
    so thin gaps between touching buildings weigh most. Object pixels and chips with fewer
    than two objects get 0. Each object's distances are computed in its bounding box grown by
    the distance beyond which the term is below ``w0 * 1e-6`` (the term is exact where it is
    larger, 0 where smaller), not over the whole chip.

    Examples
    --------
    >>> m = np.zeros((9, 9), np.uint8); m[2:7, 1:4] = 1; m[2:7, 5:8] = 1
    >>> float(border_weights(m, 1)[4, 4]) > 9
    True
    """
    from geounet.training.contact import instance_distances, instances_of

    out = np.zeros(mask.shape, dtype=np.float32)
    objects = instances_of(mask, object_class, instances)
    if objects.max(initial=0) < 2:
        return out
    reach = sigma * float(np.sqrt(2.0 * np.log(1e6)))  # d1 + d2 beyond: term < w0 * 1e-6
    d1 = np.full(mask.shape, np.inf, dtype=np.float32)
    d2 = np.full(mask.shape, np.inf, dtype=np.float32)
    for _, window, d in instance_distances(objects, reach):
        d = np.where(d <= reach, d, np.inf).astype(np.float32)
        d2[window] = np.minimum(d2[window], np.maximum(d1[window], d))
        d1[window] = np.minimum(d1[window], d)
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    background = (objects == 0) & (mask != IGNORE) & (mask != object_class)
    out[background] = term[background]
    return out


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    *,
    dice_weight: float = 1.0,
    loss: LossType = "ce",
    dice_foreground: bool = False,
) -> torch.Tensor:
    """Weighted cross-entropy (or BCE) + ``dice_weight`` x (1 - soft Dice), on labelled pixels.

    Parameters
    ----------
    logits : (N, K, H, W) raw scores.
    target : (N, H, W) int64 class indices, 255 = ignore.
    weights : (N, H, W) per-pixel weights (class weight + border term), 0 where ignored.
    dice_weight : weight of the soft-Dice term (0 = off).
    loss : ``ce``: softmax cross-entropy over the K classes; ``bce``: one-vs-rest sigmoid
        binary cross-entropy per class (mean over the K channels), with sigmoid probabilities
        in the Dice term. Both keep the argmax of the logits as the predicted class, which is
        what the inference engine (softmax) uses.
    dice_foreground : average Dice over the foreground classes only (class 0, background, left
        out; it dominates small-foreground chips and its Dice is near 1 anyway); with one
        class, all classes.

    The pixel term is ``sum(w * l) / sum(labelled)``; Dice is averaged over the classes
    present in the batch's target or prediction.

    Examples
    --------
    >>> logits = torch.zeros(1, 3, 4, 4); target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> float(segmentation_loss(logits, target, torch.ones(1, 4, 4), dice_weight=0))  # ln 3
    1.0986...
    """
    if loss not in choices(LossType):
        raise InputError(f"loss {loss!r} is not one of {choices(LossType)}; pick one.")
    logits = logits.float()
    valid = target != IGNORE
    safe = torch.where(valid, target, torch.zeros_like(target))
    k = logits.shape[1]
    onehot = F.one_hot(safe, k).permute(0, 3, 1, 2).to(logits.dtype)
    if loss == "bce":
        pixel = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(dim=1)
        probs = logits.sigmoid()
    else:
        pixel = F.cross_entropy(logits, safe, reduction="none")
        probs = logits.softmax(dim=1)
    n_valid = valid.sum().clamp_min(1)
    total = (pixel * weights * valid).sum() / n_valid
    if dice_weight > 0:
        v = valid.unsqueeze(1).to(probs.dtype)
        inter = (probs * onehot * v).sum(dim=(0, 2, 3))
        sums = (probs * v).sum(dim=(0, 2, 3)) + (onehot * v).sum(dim=(0, 2, 3))
        present = sums > 0
        if dice_foreground and k > 1:
            present[0] = False
        dice = (2 * inter + 1.0) / (sums + 1.0)
        if present.any():
            total = total + dice_weight * (1.0 - dice[present].mean())
    return total
