"""Learned codecs: vq-codec (multi-codebook vector quantisation), the factorized scalar baseline, RECOMBINER/COMBINER."""
