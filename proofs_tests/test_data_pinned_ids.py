"""Token ids of the embedded corpus, pinned before the tokenizers moved to tiktoken / HF ``tokenizers``.

The hashes were recorded with the former pure-Python GPT-2 BPE and BERT WordPiece (which had been cross-checked
id-for-id against both libraries); any change of library, version or configuration that changes an id fails here.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from oemdm_spec.data import load_embedded_dataset

PINNED = {
    ("char", "train"): (4487005, "c259489fdc4e5455541abd789e58d088cfbeac37dc6539a200dc4ad31a43461c"),
    ("char", "validation"): (266986, "f0f9e977b00889adf98b76c6284c0bed69037d1f93cc6bbfdc90e14d7f482f37"),
    ("char", "test"): (303365, "5a7a16f5dd4e5b11b2960650f377d51bb35d1f03d5cae1c3809bbcbd052933ec"),
    ("gpt2", "train"): (1388884, "8d56533a71ef62f3b0730aa2ee200e1a525220f15a302b6c39a649ad9db0b8c3"),
    ("gpt2", "validation"): (82775, "2926317ad078eb3189b6efd57634d5a640e00b99114d7d7d7e278ed4c1863438"),
    ("gpt2", "test"): (94380, "e02f50d6767fb3d302d4289a3ba26163c56ea2d9c7ec82bddef2877071f30eb2"),
    ("bert-base-uncased", "train"): (1184745, "a77f914c47c347d4e1834da21bc082fb9fed0c00b6ed4e4fac5d298546cdca49"),
    ("bert-base-uncased", "validation"): (71905, "1acc5748f08aedd1abf763a6652a27b2766994bb70a5575a73f3941a0e5fe12b"),
    ("bert-base-uncased", "test"): (81448, "4e5525078cdeec26a23c024bf76ef1fae7d479aed1d147638ec81135d4a25566"),
}


@pytest.mark.parametrize(("tokenizer", "split"), sorted(PINNED))
def test_embedded_ids_unchanged(tokenizer, split, tmp_path) -> None:
    ds = load_embedded_dataset(tokenizer, split, seq_len=8, cache_dir=tmp_path)
    ids = np.asarray(ds.ids, dtype=np.int64)
    assert (int(ids.size), hashlib.sha256(ids.tobytes()).hexdigest()) == PINNED[(tokenizer, split)]
