"""pdstack router: OpenAI-compatible prefill/decode router."""

__version__ = "0.1.0"
