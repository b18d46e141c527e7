"""Data layer: the embedded Shakespeare corpus, offline tokenizers, packed/padded datasets, disk cache.

Entry point: :func:`open_corpus` (``docs/data.md``). The char tokenizer and the embedded corpus need only torch
and numpy; GPT-2 / BERT need ``tiktoken`` / ``tokenizers``, and the LM1B / OpenWebText / saved-dataset loaders
import Hugging Face ``datasets`` lazily.
"""

from oemdm_spec.data.benchmarks import (
    load_embedded_dataset,
    load_lm1b,
    load_openwebtext,
    load_text_documents,
)
from oemdm_spec.data.cache import resolve_cache_dir
from oemdm_spec.data.corpora import Corpus, SplitData, open_corpus, protocol_defaults
from oemdm_spec.data.corpus import corpus_info, load_embedded_corpus, load_embedded_works
from oemdm_spec.data.protocols import PROTOCOLS, build_token_dataset, lm1b_detokenize
from oemdm_spec.data.sequences import PackedDataset, PaddedSentenceDataset
from oemdm_spec.data.tokenizer import TOKENIZER_NAMES, CharTokenizer, Tokenizer, get_tokenizer

__all__ = [
    "Corpus",
    "SplitData",
    "open_corpus",
    "protocol_defaults",
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
