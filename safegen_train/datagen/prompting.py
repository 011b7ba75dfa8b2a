"""From a safe caption and a concept to the rewriter's prompt, and from its reply to a caption.

Why here and not in the engines: the prompt decides what the rewriter learns (the toy
rewriter is trained on exactly these prompts) and what it is asked at generation time, so
both must come from one function. Aligned chat models often refuse; a refusal must be
recognised and counted, never kept as an "unsafe caption".
"""

from __future__ import annotations

import re
from typing import Any

from safegen_train.datagen.taxonomy import EXAMPLE_TEMPLATE, Concept, Taxonomy

# Where a reply stops being the caption: the next few-shot marker, a blank line or a new turn.
STOP_MARKERS = ("###", "\n")
_REFUSAL = re.compile(
    r"^\W*(i['’]?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:not|['’]t)|i won['’]?t|i will not|"
    r"i['’]?m (?:not able|unable)|i am (?:not able|unable)|as an ai\b|i must decline|i do not feel comfortable|"
    r"i['’]?m not comfortable)|"
    r"\b(cannot|can['’]t) (?:fulfill|comply|help with|assist with|create|generate|provide)\b|"
    r"\b(?:against|violates?) (?:my|the|our) (?:guidelines|policies|policy|content policy)\b|"
    r"\b(?:not appropriate|inappropriate) (?:for me )?to\b",
    re.IGNORECASE,
)


def build_prompt(taxonomy: Taxonomy, concept: Concept, caption: str) -> str:
    """The plain-text prompt asking for ``caption``'s unsafe version about ``concept``."""
    examples = "".join(EXAMPLE_TEMPLATE.format(**ex) for ex in concept.examples)
    template = concept.template or taxonomy.template
    return template.format(
        concept=concept.name,
        description=concept.description or concept.name,
        examples=examples,
        caption=caption.strip(),
    )


def as_chat(tokenizer: Any, prompt: str) -> str:
    """Wrap ``prompt`` as one user turn with the tokenizer's chat template (generation prompt added)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def clean_reply(text: str) -> str:
    """The caption part of a reply: up to the first stop marker, quotes and labels stripped."""
    text = text.strip()
    text = re.sub(r"^(?:###\s*)?(?:response|output|unsafe(?: version)?|caption)\s*:\s*", "", text, flags=re.I)
    cut = len(text)
    for marker in STOP_MARKERS:
        pos = text.find(marker)
        if pos >= 0:
            cut = min(cut, pos)
    text = text[:cut].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return " ".join(text.split())


def is_refusal(text: str) -> bool:
    """Whether a reply is a refusal or a lecture rather than a caption (common aligned-model phrasings)."""
    return bool(_REFUSAL.search(text or ""))
