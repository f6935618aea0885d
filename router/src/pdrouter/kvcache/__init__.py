"""What the engines hold in their KV caches, from their own events.

vLLM publishes KV-cache events (`--kv-events-config`): batches of BlockStored / BlockRemoved /
AllBlocksCleared over ZMQ PUB, numbered, with a ROUTER socket that replays missed batches.
`subscriber` follows each engine's stream, `events` decodes it, `index` keeps engine -> blocks
in bounded memory, and `hashing` computes a request's block hashes the way the engine does,
so scheduling can ask "how much of this prompt does each engine already hold?".
"""
