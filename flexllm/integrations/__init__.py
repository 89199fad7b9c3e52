"""Integrations with other engines. Each lives in its own module and imports its engine lazily.

- `flexllm.integrations.ray`: `LLMMapper`, a callable class for Ray Data's `Dataset.map_batches`
  (extra `flexllm[ray]`).
"""

__all__: list = []
