"""The embed stage's own code (rakuten.models.embed) with stub encoders on hand-made frames (docs/mutation.md).

No model is loaded: ``TEXT_ENCODERS`` / ``IMAGE_ENCODERS`` get a stub module each (its ``load`` and
``embed_*`` functions return fixed arrays), and the readers, the dvc.lock check and the thread setting
are replaced by recorders, so the order of checks, loads and settings is seen.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.embeddings import EMBEDDINGS, IMAGE, IMAGE_OK, RECORD, TEXT, TEXT_OK
from rakuten.core.errors import PipelineError
from rakuten.models import embed
from rakuten.models.resnet50 import model as resnet50


@dataclasses.dataclass(frozen=True)
class StubConfig:
    eval_batch_size: int = 32
    other: str = "kept"


class StubModel:
    def __init__(self, kind, directory):
        self.kind, self.directory, self.config = kind, directory, StubConfig()


def stub_module(kind, calls, matrix=None):
    """A module like camembert/resnet: ``load`` and ``embed_texts``/``embed_images``."""
    module = types.ModuleType(f"stub_{kind}")

    def load(directory):
        calls.append(("load", kind, directory))
        return StubModel(kind, directory)

    def embed_fn(model, frame):
        calls.append(("embed", kind, model.kind, list(frame["row_id"])))
        if matrix is not None:
            return matrix(frame)
        base = 1.0 if kind == "text" else 100.0
        width = 3 if kind == "text" else 2
        return [[base * r + j for j in range(width)] for r in frame["row_id"]]  # float64 lists: cast to float32

    module.load = load
    setattr(module, "embed_texts" if kind == "text" else "embed_images", embed_fn)
    return module


class Checked:
    def __init__(self, calls):
        self.calls = calls

    def verify(self, path):
        self.calls.append(("verify", path))
        return "ok"


@pytest.fixture
def calls(monkeypatch):
    calls: list = []
    monkeypatch.setitem(embed.TEXT_ENCODERS, "stubtext", stub_module("text", calls))
    monkeypatch.setitem(embed.IMAGE_ENCODERS, "stubimage", stub_module("image", calls))
    monkeypatch.setattr(embed, "set_threads", lambda n: calls.append(("threads", n)))
    return calls


CFG = embed.EmbedConfig(text_model="stubtext", image_model="stubimage", eval_batch_size=7, num_threads=3)
ENCODERS = {"text": "stubtext", "image": "stubimage"}


def frame():
    return pd.DataFrame(
        {
            "row_id": [5, 2, 9],
            "split": ["val", "train", "train"],
            "text_empty": [False, True, False],
            "readable": [True, True, False],
        }
    )


# --------------------------------------------------------------------------- config and inputs


def test_config_defaults_and_encoders():
    cfg = embed.EmbedConfig()
    assert (cfg.text_model, cfg.image_model, cfg.eval_batch_size, cfg.num_threads) == ("camembert", "resnet50", 128, 2)
    assert cfg.encoders == {"text": "camembert", "image": "resnet50"}
    assert CFG.encoders == ENCODERS
    assert embed.NAME == "embed" and embed.REPORT == Path("reports/embed.json")
    assert list(embed.TEXT_ENCODERS) == ["camembert"] and list(embed.IMAGE_ENCODERS) == ["resnet50"]


def test_load_frame_joins_text_and_images(monkeypatch):
    seen = []

    def texts(catalog, split, text):
        seen.append(("text", catalog, split, text))
        return pd.DataFrame(
            {
                "row_id": [1, 2, 3],
                "prdtypecode": [10, 20, 30],
                "split": ["train", "val", "test"],
                "text_light": ["a", "b", "c"],
            }
        )

    def images(catalog, split, quality):
        seen.append(("image", catalog, split, quality))
        return pd.DataFrame(
            {
                "row_id": [3, 1, 4],
                "prdtypecode": [30, 10, 40],
                "split": ["test", "train", "x"],
                "clean_path": ["c.jpg", "a.jpg", "d.jpg"],
                "readable": [False, True, True],
                "other": [0, 0, 0],
            }
        )

    monkeypatch.setattr(embed, "load_text_frame", texts)
    monkeypatch.setattr(resnet50, "load_image_frame", images)
    got = embed.load_frame()
    assert seen == [
        ("text", "data/interim/catalog.parquet", "data/interim/split.parquet", "data/processed/text.parquet"),
        ("image", "data/interim/catalog.parquet", "data/interim/split.parquet", "data/processed/image_quality.parquet"),
    ]
    pd.testing.assert_frame_equal(
        got,
        pd.DataFrame(
            {
                "row_id": [1, 3],
                "prdtypecode": [10, 30],
                "split": ["train", "test"],
                "text_light": ["a", "c"],
                "clean_path": ["a.jpg", "c.jpg"],
                "readable": [True, False],
            }
        ),
    )
    seen.clear()
    embed.load_frame("c", "s", "t", "q")
    assert seen == [("text", "c", "s", "t"), ("image", "c", "s", "q")]

    def doubled(catalog, split, quality):
        return pd.DataFrame({"row_id": [1, 1], "clean_path": ["a", "b"], "readable": [True, True]})

    monkeypatch.setattr(resnet50, "load_image_frame", doubled)
    with pytest.raises(pd.errors.MergeError):
        embed.load_frame()


def test_input_flags():
    text_ok, image_ok = embed.input_flags(frame())
    assert text_ok.tolist() == [True, False, True] and image_ok.tolist() == [True, True, False]
    assert text_ok.dtype == bool and image_ok.dtype == bool
    gaps = pd.DataFrame(
        {
            "text_empty": pd.array([False, None, True], dtype="boolean"),
            "readable": pd.array([None, True, False], dtype="boolean"),
        }
    )
    text_ok, image_ok = embed.input_flags(gaps)
    assert text_ok.tolist() == [True, False, False] and image_ok.tolist() == [False, True, False]
    text_ok, image_ok = embed.input_flags(pd.DataFrame({"row_id": [1, 2]}))
    assert text_ok.tolist() == [True, True] and image_ok.tolist() == [True, True]
    assert text_ok.dtype == bool and image_ok.dtype == bool
    predict = pd.DataFrame(
        {"readable": [True, True, False, True], "image_ok": pd.array([True, False, True, None], dtype="boolean")}
    )
    assert embed.input_flags(predict)[1].tolist() == [True, False, False, False]
    objects = pd.DataFrame(
        {
            "text_empty": pd.Series([False, None, True], dtype=object),
            "readable": pd.Series([None, True, True], dtype=object),
            "image_ok": pd.Series([True, True, None], dtype=object),
        }
    )
    text_ok, image_ok = embed.input_flags(objects)  # e.g. a frame built from JSON: object columns
    assert text_ok.tolist() == [True, False, False] and image_ok.tolist() == [False, True, False]
    assert text_ok.dtype == bool and image_ok.dtype == bool
    only_readable = pd.DataFrame({"readable": pd.Series([True, None], dtype=object)})
    assert embed.input_flags(only_readable)[1].dtype == bool
    only = pd.DataFrame({"image_ok": pd.array([True, None], dtype="boolean")})
    text_ok, image_ok = embed.input_flags(only)
    assert image_ok.tolist() == [True, False] and image_ok.dtype == bool and text_ok.tolist() == [True, True]


# --------------------------------------------------------------------------- encoders


def test_function_names_the_missing_one():
    module = types.ModuleType("rakuten.models.old")
    module.embed_texts = len
    assert embed._function(module, "embed_texts") is len
    with pytest.raises(PipelineError) as exc:
        embed._function(module, "embed_images")
    assert str(exc.value) == ("rakuten.models.old has no embed_images(); the embed stage needs it (update the package)")


def test_load_encoders_checks_both_before_loading_then_sets_batch_and_threads(calls, tmp_path):
    text_model, image_model = embed.load_encoders(CFG, tmp_path, Checked(calls))
    assert calls == [
        ("verify", tmp_path / "stubtext"),
        ("verify", tmp_path / "stubimage"),
        ("load", "text", tmp_path / "stubtext"),
        ("load", "image", tmp_path / "stubimage"),
        ("threads", 3),
    ]
    assert (text_model.kind, image_model.kind) == ("text", "image")
    assert text_model.config == StubConfig(7, "kept") and image_model.config == StubConfig(7, "kept")
    calls.clear()
    embed.load_encoders(CFG, "mdl", Checked(calls))
    assert calls[0] == ("verify", Path("mdl/stubtext")) and calls[2] == ("load", "text", Path("mdl/stubtext"))


def test_load_encoders_defaults_to_the_projects_records(calls, monkeypatch):
    found = []

    class Records:
        @staticmethod
        def for_path(path):
            found.append(path)
            return Checked(calls)

    monkeypatch.setattr(embed, "ArtifactRecords", Records)
    embed.load_encoders(CFG)
    assert found == [Path("models")]
    assert calls[:3] == [
        ("verify", Path("models/stubtext")),
        ("verify", Path("models/stubimage")),
        ("load", "text", Path("models/stubtext")),
    ]
    found.clear()
    embed.load_encoders(CFG, "elsewhere", Checked(calls))
    assert found == []


def test_encode_casts_and_checks(calls):
    f = frame()
    text, image = embed.encode(f, StubModel("t", None), StubModel("i", None), ENCODERS)
    assert text.dtype == np.float32 and image.dtype == np.float32
    assert text.tolist() == [[5, 6, 7], [2, 3, 4], [9, 10, 11]]
    assert image.tolist() == [[500, 501], [200, 201], [900, 901]]
    threads = embed.torch.get_num_threads()  # texts on one thread, then the images on the threads set before
    assert calls == [
        ("threads", 1),
        ("embed", "text", "t", [5, 2, 9]),
        ("threads", threads),
        ("embed", "image", "i", [5, 2, 9]),
    ]


@pytest.mark.parametrize(
    "kind, matrix, message",
    [
        (
            "text",
            lambda f: np.zeros(len(f)),
            "stubtext: text embeddings of shape (3,), expected (3, d): one row per input row",
        ),
        (
            "text",
            lambda f: np.zeros((len(f) - 1, 4)),
            "stubtext: text embeddings of shape (2, 4), expected (3, d): one row per input row",
        ),
        (
            "image",
            lambda f: np.zeros((len(f), 2, 2)),
            "stubimage: image embeddings of shape (3, 2, 2), expected (3, d): one row per input row",
        ),
        (
            "image",
            lambda f: np.zeros((len(f) + 1, 2)),
            "stubimage: image embeddings of shape (4, 2), expected (3, d): one row per input row",
        ),
    ],
)
def test_encode_refuses_a_wrong_shape(calls, monkeypatch, kind, matrix, message):
    table = embed.TEXT_ENCODERS if kind == "text" else embed.IMAGE_ENCODERS
    monkeypatch.setitem(table, f"stub{kind}", stub_module(kind, calls, matrix))
    with pytest.raises(PipelineError) as exc:
        embed.encode(frame(), StubModel("t", None), StubModel("i", None), ENCODERS)
    assert str(exc.value) == message


def test_embed_frame_is_the_sorted_table(calls):
    table = embed.embed_frame(frame(), StubModel("t", None), StubModel("i", None), CFG)
    assert list(table.columns) == ["row_id", TEXT_OK, IMAGE_OK, TEXT, IMAGE]
    assert table["row_id"].tolist() == [2, 5, 9]
    assert table[TEXT_OK].tolist() == [False, True, True] and table[IMAGE_OK].tolist() == [True, True, False]
    assert [v.tolist() for v in table[TEXT]] == [[2, 3, 4], [5, 6, 7], [9, 10, 11]]
    assert [v.tolist() for v in table[IMAGE]] == [[200, 201], [500, 501], [900, 901]]


def test_with_encoded_adds_the_columns_the_joint_model_reads(calls):
    f = frame()
    before = f.copy()
    out = embed.with_encoded(f, StubModel("t", None), StubModel("i", None), ENCODERS)
    pd.testing.assert_frame_equal(f, before)
    assert list(out.columns) == list(f.columns) + [TEXT, IMAGE, TEXT_OK, IMAGE_OK]
    assert [v.tolist() for v in out[TEXT]] == [[5, 6, 7], [2, 3, 4], [9, 10, 11]]
    assert [v.dtype for v in out[IMAGE]] == [np.float32] * 3 and out[IMAGE].iloc[2].tolist() == [900, 901]
    assert out[TEXT_OK].tolist() == [True, False, True] and out[IMAGE_OK].tolist() == [True, True, False]


def test_with_embeddings_loads_the_named_encoders(calls, tmp_path):
    out = embed.with_embeddings(frame(), tmp_path, ENCODERS, Checked(calls))
    assert calls == [
        ("verify", tmp_path / "stubtext"),
        ("verify", tmp_path / "stubimage"),
        ("load", "text", tmp_path / "stubtext"),
        ("load", "image", tmp_path / "stubimage"),
        ("threads", 2),
        ("threads", 1),
        ("embed", "text", "text", [5, 2, 9]),
        ("threads", embed.torch.get_num_threads()),  # the stub set_threads leaves torch's count as it was
        ("embed", "image", "image", [5, 2, 9]),
    ]
    assert out[IMAGE].iloc[0].tolist() == [500, 501] and out[TEXT_OK].tolist() == [True, False, True]


# --------------------------------------------------------------------------- records


def test_encoder_preprocessing(monkeypatch):
    seen = []

    def load_trained(models_dir, models):
        seen.append((models_dir, models))
        return {"text": {"a": 1}}, {"text": Path("x")}

    monkeypatch.setattr(embed.preprocessing, "load_trained", load_trained)
    assert embed.encoder_preprocessing(CFG, "mdl") == {"text": {"a": 1}}
    assert embed.encoder_preprocessing(embed.EmbedConfig()) == {"text": {"a": 1}}
    assert seen == [
        ("mdl", {"stubtext": "text", "stubimage": "image"}),
        ("models", {"camembert": "text", "resnet50": "image"}),
    ]


def table(n=3):
    return pd.DataFrame(
        {
            "row_id": list(range(n)),
            TEXT_OK: [True, False, True][:n],
            IMAGE_OK: [False, False, True][:n],
            TEXT: [np.zeros(4, np.float32)] * n,
            IMAGE: [np.zeros(6, np.float32)] * n,
        }
    )


def test_dims_and_record():
    assert embed.dims(table()) == {"text": 4, "image": 6}
    assert embed.dims(table(0)) == {"text": 0, "image": 0}
    trained = {"text": {"a": 1}}
    rec = embed.record(CFG, table(), trained)
    assert rec == {"encoders": ENCODERS, "dims": {"text": 4, "image": 6}, "preprocessing": {"text": {"a": 1}}}
    assert rec["preprocessing"] is not trained and type(rec["preprocessing"]) is dict
    assert all(type(v) is int for v in rec["dims"].values())


def test_report():
    f = pd.DataFrame({"split": pd.Categorical(["val", "train", "train"], categories=["val", "train", "test"])})
    got = embed.report(CFG, table(), f)
    assert got == {
        "rows": 3,
        "rows_per_split": {"train": 2, "val": 1},
        "rows_text_ok": 2,
        "rows_image_ok": 1,
        "dims": {"text": 4, "image": 6},
        "encoders": ENCODERS,
        "output": EMBEDDINGS.as_posix(),
        "record": RECORD.as_posix(),
    }
    assert list(got["rows_per_split"]) == ["train", "val"]
    assert (got["output"], got["record"]) == ("data/features/embeddings.parquet", "data/features/embeddings.json")
    assert all(type(got[k]) is int for k in ("rows", "rows_text_ok", "rows_image_ok"))
    assert all(type(v) is int for v in got["rows_per_split"].values())
    numbers = pd.DataFrame({"split": [2, 10, 10]})
    assert list(embed.report(CFG, table(), numbers)["rows_per_split"]) == ["10", "2"]
