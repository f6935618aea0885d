"""Several worker processes on one port, kept coherent by one control plane.

With `--workers N` the main process runs discovery, health/metrics scraping and an aggregate
circuit breaker per engine (the control plane), and streams that state to every worker over a
Unix socket. Workers report their per-engine failures, successes and in-flight counts back, so a
breaker opened by one worker's failures takes the engine out for all of them, and least-loaded
choices see the requests the other workers have in flight.
"""
