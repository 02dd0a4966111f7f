"""DVC stage `resnet50`: image-backbone fine-tuning on the cleaned images (any torchvision or timm model;
demo: small ResNet from scratch; full: ResNet50 ImageNet; strongest: ConvNeXt-Base)."""

from rakuten.contracts.preprocessing import load_records, save_with_model
from rakuten.core.config import from_params
from rakuten.core.io import atomic_path, write_json
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.models.resnet50 import model as resnet50
from rakuten.models.runner import fit_and_report
from rakuten.runtime import distributed


def main() -> None:
    cfg = from_params(resnet50.ResnetConfig, load_params(), "resnet50")  # validated before any work
    resnet50.resolve_weights(cfg)  # pretrained weights missing offline (any backbone): one line, before any work
    # claims free GPUs of a shared machine (one per dvc queue worker) before CUDA starts; launcher: torchrun ->
    # this script reruns under torchrun with `processes` ranks and this process exits here
    distributed.relaunch(
        cfg.launcher,
        cfg.processes,
        "resnet50",
        device=cfg.device,
        nodes=cfg,
        batch=(f"resnet50.{cfg.profile}.batch_size", cfg.batch_size),
    )
    trained_on = load_records(["image_clean"])  # data/processed/image_clean.json
    frame = resnet50.load_image_frame()
    if not distributed.is_main():  # ranks 1..N-1 train their share; rank 0 writes every output
        return distributed.worker_fit(resnet50, cfg, frame)
    with atomic_path("reports/live/resnet50", is_dir=True) as live_dir:
        # scored on every core: images one by one through the convolutions, the head row by row (same bits)
        model, _ = fit_and_report("resnet50", resnet50, cfg, frame, predict_threads=0, live_dir=live_dir)
    save_with_model("models/resnet50", trained_on)  # read back by `rakuten predict`
    write_json(resnet50.training_report(model), "reports/training/resnet50.json")


if __name__ == "__main__":
    run_stage(main)
