"""Dynamic evaluation (Krause et al., "Dynamic Evaluation of Neural Sequence Models", 2018): the
text is read as one stream, and each segment is first scored with the weights as they stand,
then used for one gradient step, so the model adapts to the text as it reads it.

The number it gives is not the model's static loss and is never mixed with it: a model that
learns from what it has already scored predicts a text's own recurring names and phrases
better. It answers "how well does this model do when allowed to adapt", the figure the
dynamic-evaluation literature reports, and costs a backward pass per segment.

Update rule (Krause et al.'s SGD with a decay to the trained weights):
    w <- w - lr * clip(grad of the segment's mean loss) + decay * (w0 - w)
"""

import numpy as np

from .model import Model
from .scores import Score

# fmt: off
DEFAULT_LR = 0.003     # SGD step on a segment's mean loss (see docs/choosing-defaults.md)
DEFAULT_DECAY = 0.0    # pull toward the trained weights after each step (0: none)
GRAD_CLIP = 1.0        # the global gradient norm is clipped to this before each step
# fmt: on


def dynamic_score(model, ids, seq=100, lr=DEFAULT_LR, decay=DEFAULT_DECAY):
    """Score of predicting ids[1:] from ids[:-1], one stream from a zero state, in segments
    of seq: each segment scored, then one SGD step on it. model is left unchanged (the
    adaptation runs on a copy of its weights). lr 0 gives the static exact reading."""
    ids = np.asarray(ids)
    n = len(ids) - 1
    if n < 1:
        raise ValueError("need at least two characters to measure a loss")
    m = Model(model.config, model.flat.copy(), model.dtype)
    w0 = model.flat
    gflat, grads = m.zeros_like_params()
    h, c = m.zero_state(1)
    total = 0.0
    for at in range(0, n, seq):
        T = min(seq, n - at)
        x = np.asarray(ids[at : at + T], np.int32).reshape(T, 1)
        y = np.asarray(ids[at + 1 : at + T + 1], np.int32).reshape(T, 1)
        gflat[:] = 0
        loss, (h, c) = m.loss_and_grad(x, y, h, c, grads)
        total += loss * T
        if lr:
            norm = float(np.sqrt(np.dot(gflat.astype(np.float64), gflat)))
            scale = lr * min(1.0, GRAD_CLIP / norm) if norm > 0 else 0.0
            m.flat -= m.dtype.type(scale) * gflat
            if decay:
                m.flat += m.dtype.type(decay) * (w0 - m.flat)
        h, c = np.ascontiguousarray(h), np.ascontiguousarray(c)
    return Score(total / n, n, 1)
