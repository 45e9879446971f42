"""Provider adapters: each turns one ``ChatRequest`` into records on a ``StreamRecorder``."""

from producers.adapters.base import ProviderAdapter
from producers.adapters.cerebras import CerebrasAdapter
from producers.adapters.openai import OpenAIAdapter, parse_chunk_payload

__all__ = ["CerebrasAdapter", "OpenAIAdapter", "ProviderAdapter", "parse_chunk_payload"]
