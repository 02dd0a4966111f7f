"""Param overrides that shrink every stage for the end-to-end tests (seconds, not minutes)."""

TINY_PARAMS: dict = {
    "sample.n_train": 540,
    "sample.n_test": 60,
    "sample.image_size": 64,
    "sample.n_jobs": 1,
}
