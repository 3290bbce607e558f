"""Stage 4, score: how well simulated activations match the real ones (docs/method.md s.7)."""
