"""The paper's data pipeline: safe captions -> unsafe rewrites -> filtered -> rendered -> quadruples.

One module per stage, each a config dataclass plus a ``run_*`` function, and a CLI on top
(``safegen-train data rewrite|filter|render|build``):

- :mod:`.rewrite`: a causal or chat LM writes an unsafe version of each caption per concept
  (:mod:`.taxonomy`, :mod:`.prompting`, :mod:`.engines`), resumable and shardable.
- :mod:`.filters`: keep rewrites that show their concept, stay close to their caption, are new.
- :mod:`.render`: draw unsafe (and missing safe) images with the original text encoder and
  keep those an output classifier says show the concept.
- :mod:`.build`: quadruples JSONL with provenance, splits by source caption, ViSU export, card.

``safegen-train data preprocess`` also lives in this CLI but not in this package: it decodes a
dataset's images once for training (:mod:`safegen_train.preprocess`, :mod:`safegen_train.pixel_cache`).

Importing this package does not import torch.
"""

from __future__ import annotations

from safegen_train.datagen.build import BuildConfig, BuildResult, run_build, split_sources
from safegen_train.datagen.captions import Caption, CaptionFileError, read_captions
from safegen_train.datagen.engines import (
    SamplingConfig,
    TransformersEngine,
    VLLMEngine,
    check_causal_lm,
    create_engine,
)
from safegen_train.datagen.filters import (
    ConceptJudge,
    FilterConfig,
    FilterResult,
    TextSimilarity,
    read_filtered,
    run_filters,
)
from safegen_train.datagen.prompting import build_prompt, clean_reply, is_refusal
from safegen_train.datagen.render import RenderConfig, RenderResult, read_rendered, run_render
from safegen_train.datagen.rewrite import RewriteConfig, Rewriter, RewriteResult, plan_rows, read_rewrites, run_rewrite
from safegen_train.datagen.taxonomy import Concept, Taxonomy, TaxonomyError, default_taxonomy, load_taxonomy

__all__ = [
    "BuildConfig",
    "BuildResult",
    "Caption",
    "CaptionFileError",
    "Concept",
    "ConceptJudge",
    "FilterConfig",
    "FilterResult",
    "RenderConfig",
    "RenderResult",
    "RewriteConfig",
    "RewriteResult",
    "Rewriter",
    "SamplingConfig",
    "Taxonomy",
    "TaxonomyError",
    "TextSimilarity",
    "TransformersEngine",
    "VLLMEngine",
    "build_prompt",
    "check_causal_lm",
    "clean_reply",
    "create_engine",
    "default_taxonomy",
    "is_refusal",
    "load_taxonomy",
    "plan_rows",
    "read_captions",
    "read_filtered",
    "read_rendered",
    "read_rewrites",
    "run_build",
    "run_filters",
    "run_render",
    "run_rewrite",
    "split_sources",
]
