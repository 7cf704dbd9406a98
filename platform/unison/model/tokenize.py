"""Tokenization shared by the Predictor, validation and head fitting: one tokenizer, one way to pad."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

IntArray = npt.NDArray[np.int64]


def load_tokenizer(directory: Path, max_length: int) -> Tokenizer:
    """The fast tokenizer from tokenizer.json, truncating to `max_length`, without padding (we pad per bucket)."""
    tokenizer = Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def pad_token_id(directory: Path, tokenizer: Tokenizer) -> int:
    """The pad id named by the tokenizer's config ([PAD] for BERT), else 0."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = Path(directory) / name
        if path.is_file():
            token = json.loads(path.read_text()).get("pad_token")
            if isinstance(token, dict):
                token = token.get("content")
            if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
                return int(tokenizer.token_to_id(token))
    return 0


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[list[IntArray], npt.NDArray[np.bool_]]:
    """Token ids per text, unpadded and truncated to the tokenizer's limit, and which texts were truncated."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
    return ids, np.array([len(e.overflowing) > 0 for e in encodings], dtype=bool)


def pad(rows: Sequence[IntArray], pad_id: int) -> tuple[IntArray, IntArray]:
    """Right-pad to the longest row: (input_ids, attention_mask), both [rows, longest]."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def length_buckets(lengths: Sequence[int], bucket_size: int) -> list[IntArray]:
    """Row indices grouped so rows of similar length share a padded batch: sort by length, cut every
    `bucket_size` rows. Padding waste is then bounded by the length spread inside each bucket."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + bucket_size] for i in range(0, len(order), bucket_size)]
