"""DVC stage `resnet50`: ResNet fine-tuning on the cleaned images (demo: small, from scratch; full: ImageNet)."""
from dataclasses import replace

from rakuten import params as P
from rakuten.io import atomic_path, write_json
from rakuten.models import resnet
from rakuten.models.text_runner import fit_and_report
from rakuten.stage import run_stage


def main() -> None:
    cfg = resnet.parse_config(P.get(P.load_params(), "resnet50"))  # validated before any work
    resnet.resolve_weights(cfg)  # full profile offline without weights: one line, before any work
    frame = resnet.load_image_frame()
    with atomic_path("reports/live/resnet50", is_dir=True) as live_dir:
        model, _ = fit_and_report("resnet50", resnet, replace(cfg, live_dir=str(live_dir)), frame)
    write_json(resnet.training_report(model), "reports/training/resnet50.json")


if __name__ == "__main__":
    run_stage(main)
