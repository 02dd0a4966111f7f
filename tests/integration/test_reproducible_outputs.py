"""Outputs that are a pure function of code, params and data: no temporary paths, timings, memory
addresses or CPU-dependent orders of ties in what DVC and git track; a warm-up that means the same
thing on every transformers version. (Bit-identical numerics across machines: test_determinism.py.)"""

from __future__ import annotations

import ast
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from rakuten.core.io import write_parquet
from rakuten.models import tfidf_svm as T
from rakuten.models.camembert import model as C
from rakuten.models.camembert.config import ScratchArchitecture
from rakuten.models.camembert.trainer_setup import loggable_args, warmup_steps
from tests.helpers.deep_frames import model_frame, parts
from tests.helpers.stagerun import REPO


@pytest.mark.parametrize(
    "n_rows, batch, epochs, ratio, expected",
    [
        (432, 16, 2, 0.1, 6),  # 27 steps/epoch x 2 = 54 -> 5.4 -> 6
        (300, 32, 3, 0.1, 3),  # 10 x 3 = 30 -> exactly 3 (not 4 from 0.1 * 30 = 3.0000000000000004)
        (100, 32, 4, 0.0, 0),
        (5, 32, 1, 0.5, 1),  # one step in all
    ],
)
def test_warmup_is_a_whole_number_of_optimiser_steps(n_rows, batch, epochs, ratio, expected, tmp_path):
    from transformers import TrainingArguments

    steps = warmup_steps(n_rows, batch, epochs, ratio)
    assert steps == expected and isinstance(steps, int)
    total = epochs * -(-n_rows // batch)
    assert TrainingArguments(output_dir=str(tmp_path), warmup_steps=steps).get_warmup_steps(total) == steps


@pytest.mark.param_effect("camembert.demo.warmup_ratio", "camembert.demo.learning_rate")
def test_trainer_warms_up_for_those_steps_and_dvclive_records_no_temporary_path(tiny_split, tmp_path):
    train, val, _ = parts(model_frame(tiny_split))
    cfg = C.CamembertConfig(logging_steps=1, eval_batch_size=64, num_threads=1, seed=0, device="cpu").with_active(
        max_length=16,
        max_train_rows=200,
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        warmup_ratio=0.3,
        scratch=ScratchArchitecture(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
    )
    model = C.train(train, val, cfg, live_dir=tmp_path / "live")
    used = model.rows["train_rows_used"]
    warmup = warmup_steps(used, cfg.batch_size, cfg.epochs, cfg.warmup_ratio)
    assert warmup >= 2
    lr = pd.read_csv(tmp_path / "live" / "plots" / "metrics" / "learning_rate.tsv", sep="\t")["learning_rate"]
    assert len(lr) == -(-used // cfg.batch_size)
    # the ramp climbs by learning_rate / warmup per step to the peak, then decays (whichever step
    # transformers logs the rate of: the one just taken or the next)
    peak = int(lr.to_numpy().argmax())
    assert lr.max() == pytest.approx(cfg.learning_rate) and peak >= warmup - 1
    np.testing.assert_allclose(np.diff(lr.to_numpy()[: peak + 1]), cfg.learning_rate / warmup)
    assert (np.diff(lr.to_numpy()[peak:]) < 0).all()
    logged = yaml.safe_load((tmp_path / "live" / "params.yaml").read_text())
    assert "output_dir" not in logged and logged["learning_rate"] == cfg.learning_rate
    assert "camembert-ckpt" not in (tmp_path / "live" / "params.yaml").read_text()


def test_loggable_args_drop_every_value_naming_the_checkpoint_directory():
    args = {
        "output_dir": "/tmp/camembert-ckpt-x1",
        "logging_dir": "/tmp/camembert-ckpt-x1/runs/May01_host",
        "run_name": "/tmp/camembert-ckpt-x1",
        "hub_model_id": "/tmp/camembert-ckpt-x1/hub",
        "seed": 42,
    }
    assert loggable_args(args) == {"seed": 42}


def test_parquet_bytes_do_not_depend_on_attrs(tmp_path):
    frame = pd.DataFrame({"row_id": [1, 2], "score": [0.5, 0.25]})
    frame.attrs["timing_s"] = {"hashing": 0.123}
    write_parquet(frame, tmp_path / "a.parquet")
    frame.attrs["timing_s"] = {"hashing": 4.56}
    write_parquet(frame, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert frame.attrs["timing_s"] == {"hashing": 4.56}  # the caller's frame is left as it was


def _tied_model(n_terms: int = 300) -> T.TfidfModel:
    terms = [f"t{i:03d}" for i in range(n_terms)]
    tfidf = TfidfVectorizer().fit([" ".join(terms)])
    clf = LogisticRegression()
    clf.classes_ = np.array([10, 40])
    weights = np.repeat([3.0, 2.0, 1.0], n_terms // 3)  # three levels, each shared by 100 terms
    clf.coef_ = np.vstack([weights[np.random.default_rng(s).permutation(n_terms)] for s in (0, 1)])
    return T.TfidfModel(Pipeline([("tfidf", tfidf), ("clf", clf)]), T.TfidfSvmConfig())


def test_top_terms_break_ties_by_term():
    table = T.top_terms(_tied_model(), k=150)
    for _, part in table.groupby("prdtypecode"):
        assert list(part["rank"]) == list(range(1, 151))
        order = part.sort_values(["weight", "term"], ascending=[False, True], kind="stable")
        assert list(part["term"]) == list(order["term"])


def test_saved_tfidf_model_holds_no_memory_address(tiny_split, tmp_path):
    train, _, test = parts(model_frame(tiny_split).assign(text_norm=lambda f: f["text_light"]))
    model = T.train(train, None, T.TfidfSvmConfig())
    assert hasattr(model.pipeline.named_steps["tfidf"], "_stop_words_id")  # what scikit-learn caches
    T.save(model, tmp_path / "m")
    again = joblib.load(tmp_path / "m" / "model.joblib")
    assert not hasattr(again.named_steps["tfidf"], "_stop_words_id")
    np.testing.assert_array_equal(
        again.predict_proba(test["text_norm"].tolist()), model.pipeline.predict_proba(test["text_norm"].tolist())
    )


def test_stage_scripts_import_rakuten_before_any_numeric_library():
    """The numeric pins (rakuten.core.numerics) act when numpy/cv2 load; a stage importing them first loses them."""
    for script in sorted((REPO / "stages").glob("*.py")):
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                name = (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name) or ""
                top = name.split(".")[0]
                if top == "rakuten":
                    break
                assert top in sys.stdlib_module_names or top == "__future__", (
                    f"{script.name}: imports {name} before rakuten"
                )
