"""Local OpenAI-compatible embeddings: all-MiniLM-L6-v2 run in numpy (no PyTorch), served on /v1/embeddings."""
