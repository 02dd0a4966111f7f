"""DVC stage `camembert`: CamemBERT fine-tuning (demo: small config from scratch; full: camembert-base)."""

from rakuten.contracts.preprocessing import load_records, save_with_model
from rakuten.core.config import from_params
from rakuten.core.io import atomic_path, write_json
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.models.camembert import model as camembert
from rakuten.models.runner import fit_and_report, load_text_frame
from rakuten.runtime import distributed


def main() -> None:
    cfg = from_params(camembert.CamembertConfig, load_params(), "camembert")  # validated before any work
    camembert.resolve_weights(cfg)  # full profile offline without weights: one line, before any work
    # claims free GPUs of a shared machine (one per dvc queue worker) before CUDA starts; launcher: torchrun ->
    # this script reruns under torchrun with `processes` ranks and this process exits here
    distributed.relaunch(
        cfg.launcher,
        cfg.processes,
        "camembert",
        device=cfg.device,
        nodes=cfg,
        batch=(f"camembert.{cfg.profile}.batch_size", cfg.batch_size),
    )
    trained_on = load_records(["text_clean"])  # data/processed/text_clean.json
    frame = load_text_frame()
    if not distributed.is_main():  # ranks 1..N-1 train their share; rank 0 writes every output
        return distributed.worker_fit(camembert, cfg, frame)
    with atomic_path("reports/live/camembert", is_dir=True) as live_dir:
        model, _ = fit_and_report("camembert", camembert, cfg, frame, live_dir=live_dir)
    save_with_model("models/camembert", trained_on)  # read back by `rakuten predict`
    write_json(camembert.training_report(model), "reports/training/camembert.json")


if __name__ == "__main__":
    run_stage(main)
