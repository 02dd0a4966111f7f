"""DVC stage `joint`: the text + image head on the cached embeddings of `embed` (seconds on CPU)."""
from rakuten.config import from_params
from rakuten.gpus import pin_free_gpus
from rakuten.io import write_json
from rakuten.models import features, joint
from rakuten.models.runner import fit_and_report
from rakuten.params import load_params
from rakuten.preprocessing import save_with_model
from rakuten.stage import run_stage


def main() -> None:
    cfg = from_params(joint.JointConfig, load_params(), "joint")  # validated before any work
    pin_free_gpus(cfg.device)  # one free GPU of a shared machine (dvc queue workers), before CUDA starts
    embeddings = features.read_embeddings()   # missing: one line naming the file and `dvc repro embed`
    record = features.read_record()
    frame = features.joint_frame(features.load_rows(), embeddings)
    model, _ = fit_and_report("joint", joint, cfg, frame, encoders=record["encoders"])
    save_with_model("models/joint", record["preprocessing"])  # the encoders' cleaning, read back by `rakuten predict`
    write_json(joint.training_report(model), "reports/training/joint.json")


if __name__ == "__main__":
    run_stage(main)
