from tests.fixtures_procs import mock_llm, process_factory  # noqa: F401  (fixtures)
