"""The trainer's data: a run's config → (tokenizer, train split, validation split).

``cfg.data`` selects the corpus (``docs/data.md``):

- ``embedded`` (default), ``lm1b``, ``lm1b-packed``, ``owt``, ``lm1b:PATH`` / ``owt:PATH``, or a path (one
  ``.txt`` file, a directory of ``.txt`` / ``.jsonl`` / ``.parquet`` files, a ``save_to_disk`` dataset) — opened
  with :func:`oemdm_spec.data.open_corpus`, tokenised once into a cached memmap;
- ``task:<spec>`` — a synthetic task of ``oemdm_spec.tasks`` (``task:latents:N=8,P=16``), sampled fresh per step.

Every batch is ``split.get_batch(step, batch, seed, rank, world_size)``, a pure function of the step, so a
resumed run continues the same data order, and each rank reads its own slice of the global batch.
"""

from __future__ import annotations

from typing import Any

TASK_PREFIX = "task:"


class TaskTokenizer:
    """The alphabet of a synthetic task as a tokenizer (ids are the task's symbols; nothing to encode)."""

    name = "task"

    def __init__(self, task: Any) -> None:
        self.task = task
        self.vocab_size = int(task.vocab_size)
        self._alphabet = list(task.alphabet())

    def decode(self, ids: Any) -> str:
        return "".join(self._alphabet[int(i)] if 0 <= int(i) < self.vocab_size else "?" for i in ids)

    def encode(self, text: str) -> list[int]:
        raise ValueError("task data is generated, not encoded from text")


def is_task(data: str) -> bool:
    return str(data).startswith(TASK_PREFIX)


def get_task_for(data: str) -> Any:
    from oemdm_spec.tasks import get_task

    return get_task(str(data)[len(TASK_PREFIX):])


def tokenizer_for(cfg: Any) -> Any:
    """The run's tokenizer (a task's alphabet for ``task:`` data), without opening the corpus."""
    if is_task(cfg.data):
        return TaskTokenizer(get_task_for(cfg.data))
    from oemdm_spec.data import get_tokenizer

    return get_tokenizer(cfg.tokenizer)


def data_defaults(data: str) -> dict[str, Any]:
    """The keys a data spec implies unless given explicitly: a named corpus (``lm1b``, ``owt``, …) its
    protocol's tokenizer and seq_len, a task its alphabet and length. A plain path or the embedded corpus
    implies nothing: the preset's tokenizer and length stay (``--preset gpt2-small --data DIR`` is GPT-2 BPE)."""
    if is_task(data):
        task = get_task_for(data)
        return {"tokenizer": "task", "seq_len": int(task.seq_len)}
    from oemdm_spec.data import protocol_defaults
    from oemdm_spec.data.corpora import SPEC_DEFAULTS

    name = str(data).split(":")[0]
    if name in SPEC_DEFAULTS and name != "embedded":
        d = protocol_defaults(data)
        return {"tokenizer": d["tokenizer"], "seq_len": d["seq_len"]}
    return {}


def build_datasets(cfg: Any, splits: tuple[str, ...] = ("train", "validation")) -> tuple[Any, ...]:
    """(tokenizer, *splits) for a TrainConfig. Splits have ``get_batch``, ``iter_eval_batches``, ``len()`` and,
    for padded data, ``pad_id`` / ``with_valid=True`` (True at real tokens)."""
    if is_task(cfg.data):
        task = get_task_for(cfg.data)
        if cfg.seq_len != task.seq_len:
            raise ValueError(f"seq_len={cfg.seq_len} does not match the task's length {task.seq_len}")
        return (TaskTokenizer(task), *(task.dataset(s) for s in splits))
    from oemdm_spec.data import open_corpus

    corpus = open_corpus(cfg.data, tokenizer=cfg.tokenizer, seq_len=cfg.seq_len, protocol=cfg.protocol or None,
                         text_column=cfg.text_column, splits=splits)
    return (corpus.tokenizer, *(corpus[s] for s in splits))


def load_text(cfg: Any) -> dict[str, str]:
    """{"train", "validation", "test"} texts of the embedded corpus or one text file split 90/5/5 by characters
    (kept for callers that want raw text; the trainer reads token splits through :func:`build_datasets`)."""
    from pathlib import Path

    if cfg.data == "embedded":
        from oemdm_spec.data import load_embedded_corpus

        return load_embedded_corpus()
    text = Path(cfg.data).read_text(encoding="utf-8")
    n = len(text)
    return {"train": text[: int(0.9 * n)], "validation": text[int(0.9 * n): int(0.95 * n)],
            "test": text[int(0.95 * n):]}
