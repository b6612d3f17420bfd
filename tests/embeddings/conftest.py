from tests.fixtures_embeddings import embeddings_server, minilm  # noqa: F401
from tests.fixtures_procs import process_factory  # noqa: F401
