"""Data layer: the embedded Shakespeare corpus, offline tokenizers, packed/padded datasets, disk cache.

Only torch and numpy are needed at run time; the benchmark loaders (LM1B, OpenWebText) import Hugging Face
``datasets`` lazily. See ``docs/data.md``.
"""

from oemdm_spec.data.benchmarks import (
    load_embedded_dataset,
    load_lm1b,
    load_openwebtext,
    load_text_documents,
)
from oemdm_spec.data.cache import resolve_cache_dir
from oemdm_spec.data.corpus import corpus_info, load_embedded_corpus, load_embedded_works
from oemdm_spec.data.protocols import PROTOCOLS, build_token_dataset, lm1b_detokenize
from oemdm_spec.data.sequences import PackedDataset, PaddedSentenceDataset
from oemdm_spec.data.tokenizer import TOKENIZER_NAMES, CharTokenizer, Tokenizer, get_tokenizer

__all__ = [
    "PROTOCOLS",
    "TOKENIZER_NAMES",
    "CharTokenizer",
    "PackedDataset",
    "PaddedSentenceDataset",
    "Tokenizer",
    "build_token_dataset",
    "corpus_info",
    "get_tokenizer",
    "lm1b_detokenize",
    "load_embedded_corpus",
    "load_embedded_dataset",
    "load_embedded_works",
    "load_lm1b",
    "load_openwebtext",
    "load_text_documents",
    "resolve_cache_dir",
]
