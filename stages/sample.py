"""DVC stage `sample`: write the synthetic catalog to data/sample/ (official layout + defects.json)."""
from dataclasses import fields

from rakuten import params as P
from rakuten.data.sample import SampleConfig, write_sample
from rakuten.io import atomic_path
from rakuten.stage import run_stage

OUT_DIR = "data/sample"


def main() -> None:
    params = P.load_params()
    source = P.choice(params, "data.source", ["sample", "raw"])
    if source == "raw":  # nothing to generate; keep an explicit, tiny output for DVC
        with atomic_path(OUT_DIR, is_dir=True) as tmp:
            (tmp / "NOT_GENERATED.txt").write_text("data.source is raw: the sample catalog was not generated\n")
        return
    section = P.get(params, "sample")
    known = {f.name for f in fields(SampleConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise P.PipelineError(f"params.yaml: unknown key sample.{unknown[0]}; expected one of {', '.join(sorted(known))}")
    try:
        config = SampleConfig(**section)
    except (TypeError, ValueError) as exc:
        raise P.PipelineError(f"params.yaml: {exc}") from None
    write_sample(config, OUT_DIR)


if __name__ == "__main__":
    run_stage(main)
