"""Is a sample creative or copied? The fraction of its character n-grams that occur verbatim
in the training text."""


def copied_fraction(sample, corpus, ns=(5, 10, 20, 40)):
    """{n: fraction of the sample's n-grams (all positions) found in corpus}, for each n no
    longer than the sample."""
    out = {}
    for n in ns:
        grams = [sample[i : i + n] for i in range(len(sample) - n + 1)]
        if not grams:
            continue
        seen = {}
        for g in grams:
            if g not in seen:
                seen[g] = g in corpus
        out[n] = sum(seen[g] for g in grams) / len(grams)
    return out
