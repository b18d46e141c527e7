"""Data layer: the embedded Shakespeare corpus, offline tokenizers, packed/padded datasets, disk cache.

Only torch and numpy are needed at run time; the benchmark loaders (LM1B, OpenWebText) import Hugging Face
``datasets`` lazily. See ``docs/data.md``.
"""

from oemdm_spec.data.corpus import corpus_info, load_embedded_corpus, load_embedded_works
from oemdm_spec.data.sequences import PackedDataset, PaddedSentenceDataset
from oemdm_spec.data.tokenizer import TOKENIZER_NAMES, CharTokenizer, Tokenizer, get_tokenizer

__all__ = [
    "TOKENIZER_NAMES",
    "CharTokenizer",
    "PackedDataset",
    "PaddedSentenceDataset",
    "Tokenizer",
    "corpus_info",
    "get_tokenizer",
    "load_embedded_corpus",
    "load_embedded_works",
]
