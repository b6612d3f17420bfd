"""Local OpenAI-compatible embeddings: all-MiniLM-L6-v2 run in numpy (no PyTorch), served on /v1/embeddings.

``python -m embeddings --host 127.0.0.1 --port 18100``; see docs/semantic-cache.md.
"""

# The semantic cache's default score-threshold with this model (a cosine distance: lower is closer). Chosen from the
# distances measured on tests/fixtures/embeddings/pairs.json; docs/semantic-cache.md shows them.
DEFAULT_SCORE_THRESHOLD = 0.10
