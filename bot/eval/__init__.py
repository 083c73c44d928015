"""`etude eval`: how good a model is, measured (bits per note, the samples' music, harmony, seed fidelity, a listener)."""
