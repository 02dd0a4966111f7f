"""DVC stage `camembert`: CamemBERT fine-tuning (demo: small config from scratch; full: camembert-base)."""
from dataclasses import replace

from rakuten import params as P
from rakuten.io import atomic_path, write_json
from rakuten.models import camembert
from rakuten.models.text_runner import fit_and_report, load_text_frame
from rakuten.stage import run_stage


def main() -> None:
    cfg = camembert.parse_config(P.get(P.load_params(), "camembert"))  # validated before any work
    camembert.resolve_weights(cfg)  # full profile offline without weights: one line, before any work
    frame = load_text_frame()
    with atomic_path("reports/live/camembert", is_dir=True) as live_dir:
        model, _ = fit_and_report("camembert", camembert, replace(cfg, live_dir=str(live_dir)), frame)
    write_json(camembert.training_report(model), "reports/training/camembert.json")


if __name__ == "__main__":
    run_stage(main)
