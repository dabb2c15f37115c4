"""Regularisation for many epochs over a small text (AWD-LSTM's tricks, Merity et al. 2018), done
around the kernels rather than inside them:

- variational dropout: one inverted-dropout mask per layer and stream, the same at every time step
  of a window (the kernels take masks (L, T, B, H); this broadcasts one (L, 1, B, H) draw);
- DropConnect on the recurrent weights (weight drop) and dropout of whole embedding rows (embed
  drop): the weights are masked for one window's forward and backward (the recurrent ones by the
  model, Model.loss_and_grad's weight_mask, as a bf16 window packs them; the embedding rows in
  place here), restored exactly afterwards, and the gradient of the raw weights is the masked
  weights' gradient times the mask;
- an exponential moving average of the weights, which evaluations and checkpoints use.

Every mask is drawn from the run's generator, so a resumed run draws the same ones.
"""

from contextlib import contextmanager

import numpy as np

from ..engine.model import dropout_masks


def window_masks(rng, mode, p, L, T, B, H, dtype):
    """The dropout masks (L, T, B, H) of one window, or None for p = 0. mode "standard": a fresh
    mask at every step; "variational": one (L, 1, B, H) draw, read at every step (a broadcast
    view: the model copies it into its window buffers)."""
    if p <= 0:
        return None
    if mode == "variational":
        return np.broadcast_to(dropout_masks(rng, (L, 1, B, H), p, dtype), (L, T, B, H))
    return dropout_masks(rng, (L, T, B, H), p, dtype)


def weight_masks(rng, params, weight_drop, embed_drop, dtype, out=None):
    """{field of Params: mask broadcastable to it} for one window: DropConnect on each element of
    the recurrent weights Wh (L, H, K), and whole rows of the first layer's input weights Wx0
    (V, K), one per character (its embedding, as the input is one-hot), each kept with
    probability 1 - p and scaled by 1 / (1 - p). Empty when both rates are 0. out: where to
    draw Wh's mask (Model.weight_mask, which a bf16 window packs from)."""
    masks = {}
    if weight_drop > 0:
        masks["Wh"] = dropout_masks(rng, params.Wh.shape, weight_drop, dtype, out)
    if embed_drop > 0:
        masks["Wx0"] = dropout_masks(rng, (params.Wx0.shape[0], 1), embed_drop, dtype)
    return masks


@contextmanager
def masked(params, grads, masks):
    """Inside the block params' arrays named in masks hold the masked weights; on leaving, the
    raw weights are copied back (bit for bit) and the gradient accumulated into grads inside the
    block, the masked weights' gradient, becomes the raw weights' (times the mask: the chain rule
    of w * mask). grads must hold no other gradient of those arrays when the block starts."""
    raw = {name: getattr(params, name).copy() for name in masks}
    try:
        for name, mask in masks.items():
            getattr(params, name)[...] *= mask
        yield
    finally:
        for name, mask in masks.items():
            getattr(params, name)[...] = raw[name]
            getattr(grads, name)[...] *= mask


class Average:
    """An exponential moving average of the weights (flat, as the model's buffer): after step t,
    avg = d * avg + (1 - d) * w with d = min(decay, (1 + t) / (10 + t)), the warm-up that keeps
    the first steps from being averaged with the random initialisation for long."""

    def __init__(self, flat, decay):
        self.decay = decay
        self.flat = flat.copy()

    def update(self, flat, step):
        d = min(self.decay, (1 + step) / (10 + step))
        self.flat *= flat.dtype.type(d)
        self.flat += flat.dtype.type(1 - d) * flat

    @contextmanager
    def swapped_into(self, model):
        """The model holds the averaged weights inside the block, its own again after (bit for
        bit: they are copied aside, not recomputed)."""
        own = model.flat.copy()
        model.flat[:] = self.flat
        try:
            yield model
        finally:
            model.flat[:] = own
