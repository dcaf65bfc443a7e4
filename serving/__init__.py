"""The teacher: a cross-encoder that labels (query, pin) pairs, served by Triton."""
