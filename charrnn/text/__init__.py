"""Text in: corpus sources and names, decoding, the vocabulary, the id cache."""
