"""Continuous labeling: the teacher labels every enriched impression, tied to its version."""
