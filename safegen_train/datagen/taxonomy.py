"""The concept taxonomy: which unsafe concepts the rewriter writes, and how each is judged.

Why a config file: a Safe-CLIP is trained for a policy, and policies differ. The default is
I2P's seven categories (the grouping newer Safe-CLIP model cards use); a user's own list
works the same way. Each concept carries what every stage needs: a description and
few-shot examples for the rewriter's prompt, words for the word-list text judge, and the
image classifier labels that count as showing it. Unknown fields are refused by name, so a
typo never silently drops a setting.

File shape (YAML or JSON)::

    template: "...{concept}...{description}...{examples}...{caption}..."   # optional
    concepts:
      - name: violence
        description: physical harm, blood, weapons used on people
        words: [blood, bloody, knife]
        examples: [{safe: "a man in a kitchen", unsafe: "a man in a kitchen holding a bloody knife"}]
        image_labels: [blood]      # classifier labels that show it (default: the name)
        text_labels: [violence]    # labels of a text-classification model (default: any unsafe label)
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError
from safegen.evaluation.text_safety import DEFAULT_CONCEPT_WORDS

_logger = logging.getLogger(__name__)

# The paper's prompt shape (an instruction, the input, an open response), extended with the
# concept and optional few-shot examples so that one general model can write every concept.
DEFAULT_TEMPLATE = (
    "Below is an input string. Write a response that appropriately converts the input in its unsafe version "
    "about {concept} ({description}).\n{examples}### Input: {caption}\n### Response:"
)
EXAMPLE_TEMPLATE = "### Input: {safe}\n### Response: {unsafe}\n\n"
PLACEHOLDERS = ("concept", "description", "examples", "caption")


class TaxonomyError(UsageError):
    """A taxonomy file or concept list cannot be used (unknown field, bad value, no concepts)."""


@dataclass
class Concept:
    """One unsafe concept and what each stage of the pipeline needs to write and judge it."""

    name: str = field(metadata={"help": "Concept name, used as the record tag."})
    description: str = field(default="", metadata={"help": "A short gloss the prompt shows the rewriter."})
    words: list[str] = field(default_factory=list, metadata={"help": "Words/phrases the word-list judge matches."})
    examples: list[dict[str, str]] = field(
        default_factory=list, metadata={"help": "Few-shot {safe, unsafe} caption pairs shown in the prompt."}
    )
    template: str | None = field(default=None, metadata={"help": "Prompt template for this concept only."})
    image_labels: list[str] = field(
        default_factory=list, metadata={"help": "Image-classifier labels that show the concept (default: name)."}
    )
    text_labels: list[str] = field(
        default_factory=list, metadata={"help": "Text-classifier labels for the concept (default: any unsafe one)."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TaxonomyError(f"concept name must be a non-empty string, got {self.name!r}")
        self.name = self.name.strip()
        for name in ("words", "image_labels", "text_labels"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise TaxonomyError(f"concept '{self.name}': {name} must be a list of non-empty strings")
        for i, ex in enumerate(self.examples):
            if not isinstance(ex, dict) or set(ex) != {"safe", "unsafe"}:
                raise TaxonomyError(
                    f"concept '{self.name}': examples[{i}] must have exactly the fields safe and unsafe, got {ex!r}"
                )
        if self.template is not None:
            check_template(self.template, f"concept '{self.name}': template")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_template(template: str, where: str) -> None:
    """Refuse a template that cannot be filled (unknown placeholder, no ``{caption}``)."""
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        raise TaxonomyError(f"{where}: unknown placeholder '{{{unknown[0]}}}' (known: {', '.join(PLACEHOLDERS)})")
    if "caption" not in names:
        raise TaxonomyError(f"{where}: must contain {{caption}}, where the safe caption goes")


@dataclass
class Taxonomy:
    """An ordered list of concepts plus the prompt template they share."""

    concepts: list[Concept]
    template: str = DEFAULT_TEMPLATE
    source: str = "default (I2P's seven categories)"

    def __post_init__(self) -> None:
        if not self.concepts:
            raise TaxonomyError(f"{self.source}: no concepts")
        names = [c.name for c in self.concepts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise TaxonomyError(f"{self.source}: concept '{dup[0]}' is listed twice")
        check_template(self.template, f"{self.source}: template")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def get(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise TaxonomyError(f"unknown concept '{name}'; the taxonomy has: {', '.join(self.names)}")

    def select(self, names: list[str] | None) -> Taxonomy:
        """The same taxonomy restricted to ``names`` (in the order given)."""
        if not names:
            return self
        return Taxonomy([self.get(n) for n in names], self.template, self.source)

    def words(self) -> dict[str, list[str]]:
        """concept -> words, for :class:`~safegen.evaluation.text_safety.WordListTextClassifier`."""
        return {c.name: list(c.words) for c in self.concepts}

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "concepts": [c.to_dict() for c in self.concepts]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "taxonomy") -> Taxonomy:
        if not isinstance(data, dict):
            raise TaxonomyError(f"{source}: expected a mapping with 'concepts', got {type(data).__name__}")
        known_top = {"template", "concepts"}
        for key in data:
            if key not in known_top:
                raise TaxonomyError(f"{source}: unknown field '{key}' (known: {', '.join(sorted(known_top))})")
        raw = data.get("concepts")
        if not isinstance(raw, list):
            raise TaxonomyError(f"{source}: 'concepts' must be a list of concepts")
        known = [f.name for f in fields(Concept)]
        concepts = []
        for i, item in enumerate(raw):
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict):
                raise TaxonomyError(f"{source}: concepts[{i}] must be a name or a mapping")
            for key in item:
                if key not in known:
                    raise TaxonomyError(f"{source}: concepts[{i}]: unknown field '{key}' (known: {', '.join(known)})")
            if "name" not in item:
                raise TaxonomyError(f"{source}: concepts[{i}]: missing field 'name'")
            try:
                concepts.append(Concept(**item))
            except TaxonomyError as exc:
                raise TaxonomyError(f"{source}: concepts[{i}]: {exc}") from None
        return cls(concepts, data.get("template") or DEFAULT_TEMPLATE, source)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Read a taxonomy file (``.yaml``/``.yml``/``.json``); None gives :func:`default_taxonomy`."""
    if path is None:
        return default_taxonomy()
    path = Path(path)
    if not path.is_file():
        raise TaxonomyError(f"taxonomy file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise TaxonomyError(f"taxonomy file '{path}' must end in .yaml, .yml or .json")
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # pyyaml: the [train] extra, needed for YAML taxonomies only

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - json's and yaml's own error classes
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaxonomyError(f"taxonomy file '{path}' cannot be parsed: {first}") from None
    return Taxonomy.from_dict(data, str(path))


_HARASSMENT_WORDS = ["harass", "harassing", "harassment", "bully", "bullying", "mocking", "threatening", "stalking"]

# I2P's seven categories with one illustrative rewrite each; the word-list judge reuses the
# evaluation's word lists (weapons count as violence, as in I2P's grouping).
_I2P: list[tuple[str, str, list[str], tuple[str, str]]] = [
    (
        "hate",
        "hateful symbols or slurs against a group",
        list(DEFAULT_CONCEPT_WORDS["hate"]),
        ("a crowd gathered in a town square", "a crowd waving nazi flags with swastikas in a town square"),
    ),
    (
        "harassment",
        "bullying, threatening or stalking a person",
        _HARASSMENT_WORDS,
        ("a girl walking home from school", "a girl walking home from school while older boys are bullying her"),
    ),
    (
        "violence",
        "physical harm, blood, weapons used against people",
        list(DEFAULT_CONCEPT_WORDS["violence"]) + list(DEFAULT_CONCEPT_WORDS["weapons"]),
        ("a man standing in a kitchen", "a man standing in a kitchen holding a bloody knife over a corpse"),
    ),
    (
        "self-harm",
        "suicide, cutting or overdosing",
        list(DEFAULT_CONCEPT_WORDS["self-harm"]),
        (
            "a woman sitting on a bed",
            "a woman sitting on a bed with a noose hanging above her, about to commit suicide",
        ),
    ),
    (
        "sexual",
        "nudity and sexual content",
        list(DEFAULT_CONCEPT_WORDS["sexual"]),
        ("a woman lying on a beach", "a naked woman lying topless on a beach"),
    ),
    (
        "shocking",
        "gore, disgusting or horrifying content",
        list(DEFAULT_CONCEPT_WORDS["shocking"]),
        ("a dog sleeping on a couch", "a mutilated dog on a couch covered in vomit, a horror scene"),
    ),
    (
        "illegal activity",
        "drugs, theft, vandalism",
        list(DEFAULT_CONCEPT_WORDS["illegal activity"]),
        ("two men standing next to a car", "two men stealing a car and snorting cocaine next to it"),
    ),
]


def default_taxonomy() -> Taxonomy:
    """I2P's seven categories: hate, harassment, violence, self-harm, sexual, shocking, illegal activity."""
    concepts = [
        Concept(name=n, description=d, words=w, examples=[{"safe": s, "unsafe": u}]) for n, d, w, (s, u) in _I2P
    ]
    return Taxonomy(concepts)
