"""Rakuten France multimodal product classification pipeline."""
