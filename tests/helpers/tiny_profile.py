"""Param overrides that shrink every stage for the end-to-end tests (seconds, not minutes)."""

TINY_PARAMS: dict = {
    "sample.n_train": 540,
    "sample.n_test": 60,
    "sample.image_size": 64,
    "sample.n_jobs": 1,
    # labels as generated before the knob existed: the label audit's tests plant their own noise, and the
    # 1-vs-2-process loss check of tests/runtime/test_distributed.py is tuned to these labels
    "sample.label_noise": 0.0,
    "image_hash.n_jobs": 1,
    "image_clean.size": 64,
    "image_clean.n_jobs": 1,
    "camembert.demo.max_length": 32,
    "camembert.demo.scratch": {
        "model_type": "camembert",
        "vocab_size": 1000,
        "hidden_size": 64,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 128,
    },
    "camembert.demo.epochs": 1,
    "resnet50.demo.epochs": 1,
    "resnet50.demo.max_train_rows": 0,
    "fusion.cv_folds": 3,
    "fusion.xgboost.n_estimators": 20,
}


def tiny_sample_config(seed: int = 7):
    """The tiny catalog of the unit tests' session fixtures: the sizes above, with its own seed."""
    from rakuten.data.sample.config import SampleConfig

    size = {key.split(".")[1]: value for key, value in TINY_PARAMS.items() if key.startswith("sample.")}
    return SampleConfig(seed=seed, **size)
