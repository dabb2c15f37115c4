"""The lines a training says about its text before it starts: how much of it a vocabulary reads
as its unknown symbol, what a very large alphabet costs, the characters a fine-tuning adds."""

from dataclasses import replace

import numpy as np

from ..engine.model import num_params


UNKNOWN_WARN = 0.01  # say so when more of the training or validation text is unknown


def unknown_notice(vocab, train_ids, val_ids):
    """A line saying how much of the text a capped (--max-vocab) or inherited (--init-from)
    vocabulary reads as its unknown symbol, when that is over UNKNOWN_WARN; else None. The
    unknown symbol is cheap to predict, so such a validation loss flatters the model."""
    unk = vocab.unk_id
    if unk < 0:
        return None
    shares = [
        (name, np.count_nonzero(np.asarray(ids) == unk) / len(ids))
        for name, ids in (("training", train_ids), ("validation", val_ids))
        if len(ids)
    ]
    high = [f"{100 * f:.1f}% of the {name} text" for name, f in shares if f > UNKNOWN_WARN]
    if not high:
        return None
    mostly = any(name == "validation" and f > 0.5 for name, f in shares)
    return (
        f"{' and '.join(high)} is outside the vocabulary (read as the unknown symbol, "
        "which is cheap to predict: the validation loss flatters the model"
        + ("; it is mostly unknown, so its loss says little" if mostly else "")
        + "); a larger --max-vocab, or a new run without --init-from, keeps them"
    )


LARGE_ALPHABET = 1000  # past this many symbols the input and output layers dominate a model


def alphabet_notice(mcfg, ids, keep=500):
    """A line for a text of very many distinct characters: what they cost the model, and what
    --max-vocab `keep` would do: keep the keep - 1 most frequent characters and one unknown
    symbol for the rest (data.vocab_from_counts), so a model of exactly `keep` symbols."""
    counts = np.sort(np.bincount(np.asarray(ids), minlength=mcfg.vocab_size))[::-1]
    share = counts[: keep - 1].sum() / max(1, counts.sum())
    small = num_params(replace(mcfg, vocab_size=keep))
    return (
        f"the text has {mcfg.vocab_size:,} distinct characters, which give this model "
        f"{num_params(mcfg):,} parameters and slow to train; the {keep - 1} most frequent cover "
        f"{share:.1%} of the text: --max-vocab {keep} keeps them and one unknown symbol for "
        f"the rest, which makes it {small:,} parameters (the unknown symbol is counted apart "
        "in every score)"
    )


def _added_notice(vocab, added, unk=False):
    """The line for a vocabulary grown by the characters added (and the unknown symbol, if unk:
    the text has undecodable bytes)."""
    shown = vocab.text(np.array([vocab.index(s) for s in added[:40]], np.intp))
    more = f" and {len(added) - 40} more" if len(added) > 40 else ""
    unk = " and the unknown symbol, for its undecodable bytes," if unk else ""
    if not added:
        return f"the text has undecodable bytes: the unknown symbol joins the vocabulary (now {len(vocab)})"
    return (
        f"the text has {len(added)} character{'s'[: len(added) != 1]} the --init-from model "
        f"lacks, added{unk} to its vocabulary (now {len(vocab)}): {shown!r}{more}"
    )
