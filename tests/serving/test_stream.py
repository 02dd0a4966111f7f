"""``rakuten predict`` in chunks: the CSV is the same bytes whatever the chunk size, in input order."""

from __future__ import annotations

import concurrent.futures as futures
import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.classes import N_CLASSES
from rakuten.core.errors import PipelineError
from rakuten.core.io import write_csv
from rakuten.serving.predict import Prediction, prediction_table
from rakuten.serving.predict_options import StreamConfig
from rakuten.serving.stream import chunks, predict_file, tables_in_order


class RowWisePredictor:
    """Scores each row from its own id, as the real models do (a row's output depends on that row only)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.models = SimpleNamespace(image_threads=1)  # what predict_file tunes on the real predictor

    def predict_rows(self, rows: pd.DataFrame, work_dir) -> Prediction:
        self.calls.append(len(rows))
        rng = [np.random.default_rng(int(r)) for r in rows["row_id"]]
        proba = np.array([g.dirichlet(np.ones(N_CLASSES)) for g in rng]).reshape(len(rows), N_CLASSES)
        inputs = ["text+image" if r % 3 else "text only (image missing)" for r in rows["row_id"]]
        table = prediction_table(rows["orig_index"].to_numpy(), proba, inputs, needs_review=proba.max(1) < 0.1)
        return Prediction(rows, proba, table)


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"row_id": np.arange(n), "orig_index": np.arange(n) + 84916})


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 1000])
def test_chunked_csv_is_the_bytes_of_the_whole_table(tmp_path, chunk_rows):
    rows = _rows(50)
    whole = RowWisePredictor().predict_rows(rows, tmp_path).table
    write_csv(whole, tmp_path / "whole.csv", index=True)  # how `rakuten predict` wrote it before streaming
    predictor = RowWisePredictor()
    seen: list[int] = []
    done = predict_file(
        predictor,
        rows,
        tmp_path / "out.csv",
        tmp_path,
        StreamConfig(chunk_rows=chunk_rows),
        on_chunk=lambda p: seen.append(len(p.table)),
    )
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert predictor.calls == [len(c) for c in chunks(rows, chunk_rows)] == seen
    assert max(predictor.calls) <= chunk_rows  # memory bounded by the chunk
    assert done.rows == 50 and done.partial == int(whole["inputs_used"].str.contains("only").sum())
    assert done.review == int(whole["needs_review"].sum())


def test_results_come_back_in_input_order_with_bounded_work_in_flight():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def work(i: int) -> int:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.002 * (7 - i % 7))  # later parts finish first
        with lock:
            in_flight[0] -= 1
        return i

    with futures.ThreadPoolExecutor(4) as pool:
        out = list(tables_in_order(lambda i: pool.submit(work, i), iter(range(30)), ahead=3))
    assert out == list(range(30))
    assert peak[0] <= 3


def test_a_failed_run_leaves_no_output(tmp_path):
    class Failing(RowWisePredictor):
        def predict_rows(self, rows, work_dir):
            if rows["row_id"].iloc[0] >= 20:
                raise PipelineError("row 20: boom")
            return super().predict_rows(rows, work_dir)

    with pytest.raises(PipelineError, match="row 20: boom"):
        predict_file(Failing(), _rows(40), tmp_path / "out.csv", tmp_path, StreamConfig(chunk_rows=10))
    assert not (tmp_path / "out.csv").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_several_workers_need_the_models_folder_and_cannot_explain(tmp_path):
    cfg = StreamConfig(workers=2)
    with pytest.raises(PipelineError, match="several workers need the models folder"):
        predict_file(None, _rows(3), tmp_path / "out.csv", tmp_path, cfg)
    assert StreamConfig(workers=0).processes() >= 1
