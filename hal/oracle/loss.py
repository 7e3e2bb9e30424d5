"""Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (ONNX semantics)."""

from __future__ import annotations

import numpy as np

from hal.oracle import op


def _picked_losses(log_prob, target, weight, ignore_index):
    """(-log_prob at each target class, each element's weight or None), shaped like target.

    The class axis is 1; extra axes after it are flattened and restored. An ignored element
    has loss 0 and weight 0; a target class outside [0, C) that is not ignored is an error.
    """
    n, c = log_prob.shape[:2]
    x = log_prob.reshape(n, c, -1)
    t = np.asarray(target).reshape(n, -1)
    valid = t != ignore_index if ignore_index is not None else np.ones(t.shape, bool)
    bad = valid & ((t < 0) | (t >= c))
    if bad.any():
        raise ValueError(f"target class {int(t[bad][0])} is outside [0, {c}) "
                         f"(and is not ignore_index {ignore_index})")
    safe = np.where(valid, t, 0)
    picked = np.take_along_axis(x, safe[:, None, :], axis=1)[:, 0, :]
    loss = np.where(valid, -picked, 0).astype(log_prob.dtype)
    w = None
    if weight is not None:
        w = np.where(valid, np.take(weight, np.clip(safe, 0, c - 1)), 0).astype(log_prob.dtype)
    elif ignore_index is not None:
        w = valid.astype(log_prob.dtype)
    shape = np.shape(target)
    return loss.reshape(shape), None if w is None else w.reshape(shape)


def _reduce(loss, w, reduction, dtype):
    if w is not None:
        loss = loss * w
    if reduction == "none":
        return loss.astype(dtype)
    if reduction == "sum":
        return np.asarray(loss.sum(), dtype)
    if reduction != "mean":
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    # a weighted mean divides by the weights taken (ignored elements weigh 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = loss.sum() / w.sum() if w is not None else loss.mean()
    return np.asarray(mean, dtype)


@op("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(x, target, weight=None, ignore_index=None, reduction="mean"):
    if x.ndim < 2:
        raise ValueError(f"input must be [N, C] or [N, C, d1, ...], got shape {x.shape}")
    loss, w = _picked_losses(x, target, weight, ignore_index)
    return _reduce(loss, w, reduction, x.dtype)


@op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(scores, labels, weights=None, ignore_index=None,
                               reduction="mean"):
    """Returns (loss, log_prob); log_prob is the optional second output."""
    if scores.ndim < 2:
        raise ValueError(f"scores must be [N, C] or [N, C, d1, ...], got shape {scores.shape}")
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_prob = (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(scores.dtype)
    loss, w = _picked_losses(log_prob, labels, weights, ignore_index)
    return _reduce(loss, w, reduction, scores.dtype), log_prob
