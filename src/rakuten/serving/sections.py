"""The sections of ``params.yaml`` and the declaration each one is parsed into, in pipeline order.

Why here: the map names declarations from every layer, so it sits in the top one. It is what
``params.yaml`` is generated from (``python -m tools.params_yaml --write``; ``--check`` in the tests),
and what tells each stage's tracked params apart from its runtime knobs
(:func:`rakuten.core.knob_yaml.tracked_keys`). No stage imports it: a stage parses only its own
sections, so it never reruns for another stage's declarations.
"""

from __future__ import annotations

from rakuten.contracts import registry
from rakuten.core.knob_yaml import render_section
from rakuten.data.sample.config import SampleConfig
from rakuten.data.source import DataConfig, IngestConfig
from rakuten.data.split import SplitConfig
from rakuten.evaluation.evaluate import EvaluateConfig
from rakuten.evaluation.label_audit.config import LabelAuditConfig
from rakuten.evaluation.report.config import ReportConfig
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.review import SECTION as REVIEW
from rakuten.fusion.review import ReviewConfig
from rakuten.image.config import ImageCleanConfig
from rakuten.image.image_hash import HashConfig
from rakuten.models.embed import EmbedConfig
from rakuten.serving.serve.limits import SECTION as SERVE
from rakuten.serving.serve.limits import ServeLimits
from rakuten.text.text_clean import TextCleanConfig


def model_sections() -> dict[str, type]:
    """One section per registered model, named after it and declared by its :attr:`ModelSpec.config` class,
    so a model added to the registry gets its params.yaml section without an edit here."""
    return {name: getattr(registry.load_module(name), spec.config) for name, spec in registry.MODELS.items()}


#: section -> its declaration, in pipeline order (``serve`` last: the service, not a stage, reads it)
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "sample": SampleConfig,
    "ingest": IngestConfig,
    "image_hash": HashConfig,
    "split": SplitConfig,
    "text_clean": TextCleanConfig,
    "image_clean": ImageCleanConfig,
    "label_audit": LabelAuditConfig,
    **model_sections(),
    "embed": EmbedConfig,
    "fusion": FusionConfig,
    REVIEW: ReviewConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    SERVE: ServeLimits,
}

HEADER = """\
# Every knob of the pipeline, one section per stage, at its declared default.
# GENERATED from the declarations in src/rakuten (`python -m tools.params_yaml --write`): change a default or
# a help text there, not here. Sweep any knob with `dvc exp run -S section.key=value`; dvc.yaml lists which
# keys each stage reads (knobs marked runtime are left out: they never change an output).
"""


def declaration(section: str) -> type:
    """The class section ``section`` is parsed into."""
    return SECTIONS[section]


def render_params() -> str:
    """The whole ``params.yaml``: the header, then every section at its declared defaults."""
    return HEADER + "".join("\n" + render_section(name, declaration(name)) for name in SECTIONS)
