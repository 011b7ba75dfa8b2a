"""Text generation engines for the rewriter: transformers (anywhere) and vLLM (GPU scale, optional).

Why a sampling loop of our own for transformers: every row has its own seed, recorded in
the output, and its text must depend on that seed alone, not on which rows happened to
share its batch or on how many processes ran. ``generate()`` draws all rows of a batch
from one global random stream, so a resumed or resharded run would write different text.
Here each row samples from its own ``torch.Generator``; left padding with explicit
position ids keeps a row's logits the same alone or in a batch. vLLM supports a seed per
request natively.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from safegen.core.devices import resolve_dtype
from safegen.core.errors import SafegenError, UsageError

_logger = logging.getLogger(__name__)

ENGINES = ("auto", "transformers", "vllm")


@dataclass
class SamplingConfig:
    """How the rewriter samples; recorded with every run (temperature 0 means greedy)."""

    temperature: float = field(default=0.8, metadata={"help": "Softmax temperature; 0 for greedy decoding."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass (1 turns it off)."})
    top_k: int = field(default=0, metadata={"help": "Keep the k most likely tokens (0 turns it off)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest reply, in tokens."})

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise UsageError(f"sampling: temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"sampling: top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UsageError(f"sampling: top_k must be >= 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise UsageError(f"sampling: max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_causal_lm(source: str) -> Any:
    """The model's config, or one line saying it is not a causal language model."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from safegen import load_or_explain

    try:
        config = load_or_explain(source, lambda: AutoConfig.from_pretrained(source, trust_remote_code=False))
    except SafegenError:
        raise
    except (OSError, ValueError) as exc:
        raise UsageError(f"rewriter '{source}' cannot be loaded as a transformers model: {_first_line(exc)}") from None
    kind = getattr(config, "model_type", "?")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UsageError(
            f"rewriter '{source}' is a '{kind}' model, not a causal language model; pass a causal or chat LM "
            "(a folder or hub id that AutoModelForCausalLM loads: Llama, Mistral, Qwen, GPT-2, ...)"
        )
    return config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TransformersEngine:
    """Batched sampling with any ``AutoModelForCausalLM`` (hub id or folder), one generator per row."""

    name = "transformers"

    def __init__(self, model: str | Any, tokenizer: Any = None, *, device: str = "cpu", dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from safegen import load_or_explain

        if isinstance(model, str):
            self.model_id = model
            check_causal_lm(model)
            torch_dtype = resolve_dtype(dtype, device, gpu_default="bf16")
            self.model = load_or_explain(
                model,
                lambda: AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, trust_remote_code=False),
            )
            if tokenizer is None:
                tokenizer = load_or_explain(
                    model, lambda: AutoTokenizer.from_pretrained(model, trust_remote_code=False)
                )
        else:  # an already built model (tests, the toy world)
            self.model = model
            self.model_id = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
            if tokenizer is None:
                raise UsageError("an in-memory rewriter model needs its tokenizer")
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.device = device
        self.model.to(device).eval()
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._torch = torch

    def _cache_arg(self) -> str:
        """The key-value cache's argument name: ``cache`` in newer transformers, ``past_key_values`` before."""
        import inspect

        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    @property
    def chat(self) -> bool:
        """Whether the tokenizer has a chat template (prompts are then sent as a user turn)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model_id, "chat": self.chat}

    def generate(self, prompts: list[str], seeds: list[int], sampling: SamplingConfig) -> list[str]:
        """One reply per prompt; row ``i`` samples from a generator seeded with ``seeds[i]``."""
        torch = self._torch
        if not prompts:
            return []
        # A chat template already wrote the begin-of-sequence token; never add a second one.
        bos = self.tokenizer.bos_token
        templated = bool(bos) and all(p.startswith(bos) for p in prompts)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        ids = enc["input_ids"].to(self.device)  # (B, T)
        mask = enc["attention_mask"].to(self.device)  # (B, T)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        batch = ids.shape[0]
        done = [False] * batch
        replies: list[list[int]] = [[] for _ in range(batch)]
        past, step_ids, step_pos = None, ids, positions
        pad = self.tokenizer.pad_token_id
        cache_arg = self._cache_arg()
        with torch.no_grad():
            for _ in range(sampling.max_new_tokens):
                out = self.model(
                    input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True, **{cache_arg: past}
                )
                past = getattr(out, cache_arg, None)
                logits = out.logits[:, -1, :].float().cpu()  # (B, V)
                nxt = _sample(logits, sampling, gens)  # (B,)
                for i in range(batch):
                    if done[i]:
                        nxt[i] = pad
                        continue
                    token = int(nxt[i])
                    if token in self.eos_ids:
                        done[i] = True
                        continue
                    replies[i].append(token)
                    if len(replies[i]) % 4 == 0 and _has_stop(self.tokenizer.decode(replies[i])):
                        done[i] = True
                if all(done):
                    break
                step_ids = nxt[:, None].to(self.device)  # (B, 1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                step_pos = step_pos[:, -1:] + 1
        return [self.tokenizer.decode(r, skip_special_tokens=True) for r in replies]


def _has_stop(text: str) -> bool:
    from safegen_train.datagen.prompting import STOP_MARKERS

    return any(m in text for m in STOP_MARKERS)


def _sample(logits: Any, sampling: SamplingConfig, gens: list[Any]) -> Any:
    """(B, V) logits -> (B,) token ids: greedy at temperature 0, else top-k/top-p with each row's generator."""
    import torch

    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = logits / sampling.temperature
    if sampling.top_k > 0:
        k = min(sampling.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the most likely one always stays)
        drop = probs.cumsum(-1) - probs >= sampling.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(gens)])


class VLLMEngine:
    """vLLM's offline engine (GPU scale); a seed per request keeps rows reproducible."""

    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", **options: Any):
        try:
            from vllm import LLM
        except ImportError:
            raise UsageError("engine 'vllm' needs the vllm package (pip install vllm, GPU only)") from None
        check_causal_lm(model)
        self.model_id = model
        vllm_dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(dtype, "auto")
        self.llm = LLM(model=model, dtype=vllm_dtype, trust_remote_code=False, **options)
        self.tokenizer = self.llm.get_tokenizer()

    @property
    def chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model_id, "chat": self.chat}

    def generate(self, prompts: list[str], seeds: list[int], sampling: SamplingConfig) -> list[str]:
        from vllm import SamplingParams

        from safegen_train.datagen.prompting import STOP_MARKERS

        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else -1,
                max_tokens=sampling.max_new_tokens,
                seed=int(seed),
                stop=list(STOP_MARKERS),
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def create_engine(model: str | Any, *, engine: str = "auto", device: str = "cpu", dtype: str = "auto", tokenizer=None):
    """The rewriter's engine: vLLM when asked (or ``auto`` on a GPU with vLLM installed), else transformers."""
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}, got '{engine}'")
    if engine == "auto":
        engine = (
            "vllm" if isinstance(model, str) and device.startswith("cuda") and vllm_available() else "transformers"
        )
    if engine == "vllm":
        if not isinstance(model, str):
            raise UsageError("engine 'vllm' loads its model itself: pass a hub id or folder")
        return VLLMEngine(model, dtype=dtype)
    return TransformersEngine(model, tokenizer, device=device, dtype=dtype)
