"""Sluice's own mock OpenAI-compatible model server, used by `make run`, the tests and `make bench`.

Run it with ``python -m mockllm --port 18000`` (or ``sluice-mock-llm``); see ``mockllm.app`` for the endpoints.
"""
