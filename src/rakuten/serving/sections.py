"""The sections of ``params.yaml`` and the declaration each one is parsed into, in pipeline order.

Why here: the map names declarations from every layer, so it sits in the top one. It is what
``params.yaml`` is generated from (``python -m tools.params_yaml --write``; ``--check`` in the tests),
and what tells each stage's tracked params apart from its runtime knobs
(:func:`rakuten.core.knob_yaml.tracked_keys`). Classes are named as ``module:Class`` and imported on
use, so reading the map costs nothing and a stage never imports the declarations of another.
"""

from __future__ import annotations

import importlib

from rakuten.core.knob_yaml import render_section

#: section -> ``module:Class`` of its declaration
SECTIONS: dict[str, str] = {
    "data": "rakuten.data.source:DataConfig",
    "sample": "rakuten.data.sample.config:SampleConfig",
    "ingest": "rakuten.data.source:IngestConfig",
    "image_hash": "rakuten.image.image_hash:HashConfig",
    "split": "rakuten.data.split:SplitConfig",
    "text_clean": "rakuten.text.text_clean:TextCleanConfig",
    "image_clean": "rakuten.image.config:ImageCleanConfig",
    "tfidf_svm": "rakuten.models.tfidf_svm:TfidfSvmConfig",
    "fasttext": "rakuten.models.fasttext:FastTextConfig",
    "camembert": "rakuten.models.camembert:CamembertConfig",
    "resnet50": "rakuten.models.resnet50:ResnetConfig",
    "embed": "rakuten.models.embed:EmbedConfig",
    "joint": "rakuten.models.joint:JointConfig",
    "fusion": "rakuten.fusion.fusion:FusionConfig",
    "report": "rakuten.evaluation.report:ReportConfig",
}

HEADER = """\
# Every knob of the pipeline, one section per stage, at its declared default.
# GENERATED from the declarations in src/rakuten (`python -m tools.params_yaml --write`): change a default or
# a help text there, not here. Sweep any knob with `dvc exp run -S section.key=value`; dvc.yaml lists which
# keys each stage reads (knobs marked runtime are left out: they never change an output).
"""


def declaration(section: str) -> type:
    """The class section ``section`` is parsed into."""
    module, _, name = SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def render_params() -> str:
    """The whole ``params.yaml``: the header, then every section at its declared defaults."""
    return HEADER + "".join("\n" + render_section(name, declaration(name)) for name in SECTIONS)
