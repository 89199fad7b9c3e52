"""flexllm's built-in OpenAI-, Gemini- and Anthropic-compatible mock server, for tests, demos and your own tests.

    python -m flexllm.mock --port 8000 --latency 0.2

See `MockServer` for the Python API and the `[[mock:...]]` fault directives.
"""
from ._server import MockServer, RecordedRequest

__all__ = ["MockServer", "RecordedRequest"]
