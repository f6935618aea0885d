"""Parts of the fake vLLM engine test double (see tests/doubles/fake_engine.py)."""
