"""The trainer's data: a run's config → (tokenizer, train dataset, validation dataset).

Every batch is ``dataset.get_batch(step, batch, seed, rank, world_size)``, a pure function of the step, so
a resumed run continues the same data order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_text(cfg: Any) -> dict[str, str]:
    """{"train", "validation", "test"} texts: the embedded corpus, or a text file split 90/5/5 by characters."""
    if cfg.data == "embedded":
        from oemdm_spec.data import load_embedded_corpus

        return load_embedded_corpus()
    text = Path(cfg.data).read_text(encoding="utf-8")
    n = len(text)
    return {"train": text[: int(0.9 * n)], "validation": text[int(0.9 * n): int(0.95 * n)],
            "test": text[int(0.95 * n):]}


def build_datasets(cfg: Any):
    """(tokenizer, train, validation) for a TrainConfig: packed sequences of ``cfg.seq_len`` tokens."""
    from oemdm_spec.data import PackedDataset, get_tokenizer

    tok = get_tokenizer(cfg.tokenizer)
    texts = load_text(cfg)
    train = PackedDataset(tok.encode(texts["train"]), cfg.seq_len)
    val = PackedDataset(tok.encode(texts["validation"]), cfg.seq_len)
    return tok, train, val
