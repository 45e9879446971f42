"""Provider adapters: each turns one ``ChatRequest`` into records on a ``StreamRecorder``."""

from tokenpulse.producers.adapters.base import ProviderAdapter
from tokenpulse.producers.adapters.cerebras import CerebrasAdapter
from tokenpulse.producers.adapters.openai import OpenAIAdapter, parse_chunk, parse_chunk_payload

__all__ = ["CerebrasAdapter", "OpenAIAdapter", "ProviderAdapter", "parse_chunk", "parse_chunk_payload"]
