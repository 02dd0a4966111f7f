"""DVC stage `joint`: the text + image head on the cached embeddings of `embed` (seconds on CPU)."""

from rakuten.contracts import embeddings
from rakuten.contracts.preprocessing import save_with_model
from rakuten.core.config import from_params
from rakuten.core.io import write_json
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.models import joint
from rakuten.models.runner import fit_and_report
from rakuten.runtime.gpus import pin_free_gpus


def main() -> None:
    cfg = from_params(joint.JointConfig, load_params(), "joint")  # validated before any work
    pin_free_gpus(cfg.device)  # one free GPU of a shared machine (dvc queue workers), before CUDA starts
    table = embeddings.read_embeddings()  # missing: one line naming the file and `dvc repro embed`
    record = embeddings.read_record()
    frame = embeddings.joint_frame(embeddings.load_rows(), table)
    model, _ = fit_and_report("joint", joint, cfg, frame, encoders=record["encoders"])
    save_with_model("models/joint", record["preprocessing"])  # the encoders' cleaning, read back by `rakuten predict`
    write_json(joint.training_report(model), "reports/training/joint.json")


if __name__ == "__main__":
    run_stage(main)
