"""One run of tests/integration/test_determinism.py, in its own interpreter: what the pipeline's numerics produce.

``python -m tests.helpers.determinism_run SAMPLE_DIR OUT_DIR [--unpinned]`` trains the tiny demo CamemBERT
and ResNet (real ``train``/``predict_proba``), cleans a few images and draws their contact sheets
(real ``clean_image``/``contact_sheets``), runs a few numpy/OpenBLAS operations whose results depend
on the instruction set, and writes it all under OUT_DIR for the test to compare byte for byte.

A script because the policy acts when libraries load: each run needs a fresh interpreter with
the environment the test gives it. ``--unpinned`` is the control: the caller's environment
restored after ``rakuten`` pinned it, and torch left at its defaults (threads only).
"""

import os
import sys

CALLER_ENV = dict(os.environ)
import rakuten.core.numerics as numerics  # noqa: E402  first: pins the environment before numpy, torch, cv2 load

UNPINNED = "--unpinned" in sys.argv
if UNPINNED:
    os.environ.clear()
    os.environ.update(CALLER_ENV)

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from rakuten.data.ingest import load_catalog  # noqa: E402
from rakuten.data.split import split_catalog  # noqa: E402
from rakuten.image.config import ImageCleanConfig  # noqa: E402
from rakuten.image.contact_sheet import contact_sheets, write_contact_sheets  # noqa: E402
from rakuten.image.process import clean_image  # noqa: E402
from rakuten.models.camembert import model as C  # noqa: E402
from rakuten.models.camembert.config import ScratchArchitecture  # noqa: E402
from rakuten.models.resnet50 import model as R  # noqa: E402
from rakuten.runtime import torch_setup  # noqa: E402
from tests.helpers.deep_frames import model_frame, parts  # noqa: E402

CAMEMBERT = C.CamembertConfig(logging_steps=5, eval_batch_size=64, num_threads=1, seed=0, device="cpu").with_active(
    max_length=32,
    max_train_rows=200,
    epochs=1,
    batch_size=16,
    learning_rate=3e-3,
    warmup_ratio=0.1,
    scratch=ScratchArchitecture(vocab_size=1000, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128),
)
RESNET = R.ResnetConfig(eval_batch_size=64, num_threads=1, seed=0, device="cpu").with_active(
    arch="resnet18",
    weights="none",
    image_size=32,
    max_train_rows=100,
    epochs=1,
    batch_size=32,
    learning_rate=3e-3,
    weight_decay=1e-4,
    patience=5,
)
IMAGES = 40


def mkl_branch() -> int | None:
    """MKL's conditional-numerical-reproducibility branch (3 = COMPATIBLE), when torch exports the query."""
    import ctypes

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        return int(lib.mkl_serv_cbwr_get(1))  # MKL_CBWR_BRANCH
    except (OSError, AttributeError):
        return None


def threads_only(num_threads: int) -> int:
    """configure_torch's thread count (0 = all cores) without the rest of the policy."""
    n = num_threads if num_threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def numpy_ops() -> dict[str, np.ndarray]:
    """numpy's SIMD loops (exp, log, sort of ties) and OpenBLAS's kernels (gemm)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=100_000) * 5
    a = rng.normal(size=(2000, 300))
    return {
        "exp": np.exp(x),
        "log": np.log(np.abs(x) + 1e-3),
        "argsort_ties": np.argsort(np.round(x, 1)),
        "gemm": a.T @ a,
        "gemv": a @ a[0],
    }


def main(sample: Path, out: Path) -> None:
    if UNPINNED:
        torch_setup.configure_torch = threads_only
    catalog, _ = load_catalog(sample)
    table, _ = split_catalog(catalog, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    frame = catalog.merge(table, on="row_id")
    train, val, test = parts(model_frame(frame))
    seconds = {}
    start = time.perf_counter()
    np.save(out / "camembert.npy", C.predict_proba(C.train(train, val, CAMEMBERT), test))
    seconds["camembert"] = time.perf_counter() - start
    start = time.perf_counter()
    np.save(out / "resnet.npy", R.predict_proba(R.train(train, val, RESNET), test))
    seconds["resnet"] = time.perf_counter() - start
    np.savez(out / "numpy_ops.npz", **numpy_ops())

    rows = frame.head(IMAGES)
    images = out / "images"
    images.mkdir()
    cfg = ImageCleanConfig()  # 224 px: the tiny catalog's 64 px sources are up-scaled (bicubic)
    records = pd.DataFrame(
        [clean_image(int(r), str(p), str(images), cfg) for r, p in zip(rows["row_id"], rows["image_path"])]
    )
    groups = np.full(len(records), -1)
    groups[:3] = 0  # one small "cluster", so the duplicate sheets draw thumbnails too
    records = records.assign(
        clean_path=[str(images / f"{r}.jpg") for r in records["row_id"]],
        exact_dup_group=groups,
        near_dup_group=np.where(groups < 0, -1, 0),
        keep_for_train=True,
        sample_weight=1.0,
    )
    records.loc[0, "exact_dup_group"] = 1  # two exact groups inside the near cluster: drawn on its sheet
    sheets = contact_sheets(records, rows["image_path"].astype(str).tolist(), rows["prdtypecode"].tolist())
    write_contact_sheets(sheets, out / "sheets")
    records.drop(columns=["clean_path"]).to_csv(out / "image_records.csv", index=False)
    (out / "run.json").write_text(
        json.dumps(
            {
                **seconds,
                "capability": torch.backends.cpu.get_cpu_capability(),
                "mkl_branch": mkl_branch(),
                "late": numerics.late_libraries(),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
