"""``meshgate demo``: a whole mesh on one machine with the embedded defaults."""
