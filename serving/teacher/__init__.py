"""The MiniLM cross-encoder teacher: text building, training, evaluation, export."""
