"""The losses of HAL's training graphs: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Computed in fp32 whatever the compute type (a bf16 log-probability keeps 3 digits, and the
mean over a batch loses more), and returned in fp32: the training graph's loss is fp32.
"""

from __future__ import annotations

from hal.backends.common.kernels import kernel


@kernel("NegativeLogLikelihoodLoss")
def nll_loss(cx, x, target, weight=None, ignore_index=None, reduction="mean"):
    """``-x[n, target[n], d...]`` per element, weighted by ``weight[target]``; ``mean``
    divides by the weights' sum over the elements not ignored (ONNX's definition)."""
    xp = cx.xp
    x = cx.wide(x)
    keep = None
    if ignore_index is not None:
        keep = target != cx.const(ignore_index, target)
        target = xp.where(keep, target, xp.zeros_like(target))
    picked = xp.squeeze(xp.take_along_axis(x, xp.expand_dims(target, 1), axis=1), axis=1)
    w = None
    if weight is not None:
        w = xp.take(cx.cast(weight, picked.dtype), target, axis=0)
    if keep is not None:
        k = cx.cast(keep, picked.dtype)
        w = k if w is None else w * k
    loss = -picked if w is None else -picked * w
    if reduction == "none":
        return loss
    total = xp.sum(loss)
    if reduction == "sum":
        return total
    if w is None:
        return xp.mean(loss)
    return total / xp.sum(w)


@kernel("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(cx, scores, labels, weights=None, ignore_index=None,
                               reduction="mean"):
    """The loss of ``LogSoftmax(scores, axis=1)``; the log-probabilities are its second output,
    in the scores' type."""
    log_prob = cx.kernel("LogSoftmax")(cx, cx.wide(scores), axis=1)
    loss = nll_loss(cx, log_prob, labels, weights, ignore_index, reduction)
    return loss, cx.narrow(log_prob, scores)
