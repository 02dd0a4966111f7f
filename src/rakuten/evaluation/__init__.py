"""Scoring on test, the error-analysis report, explanations (the ``evaluate`` stage)."""
