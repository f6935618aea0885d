"""Multi-round QA benchmark: workload, streaming client, statistics and reports.

The entry point is ``multi_round_qa.py`` next to this package; ``run_pd.sh`` wraps it.
"""
