"""DVC stage `sample`: write the synthetic catalog to data/sample/ (official layout + defects.json)."""

from rakuten.core.config import from_params
from rakuten.core.io import atomic_path
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.generate import write_sample
from rakuten.data.source import SAMPLE_DIR, DataConfig


def main() -> None:
    params = load_params()
    data, config = from_params(DataConfig, params, "data"), from_params(SampleConfig, params, "sample")
    if data.source == "raw":  # nothing to generate; keep an explicit, tiny output for DVC
        with atomic_path(SAMPLE_DIR, is_dir=True) as tmp:
            (tmp / "NOT_GENERATED.txt").write_text("data.source is raw: the sample catalog was not generated\n")
        return
    write_sample(config, SAMPLE_DIR)


if __name__ == "__main__":
    run_stage(main)
