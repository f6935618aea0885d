from pdrouter.stats.engine_metrics import parse_engine_metrics

CURRENT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 4.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.25
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 100.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 40.0
vllm:prefix_cache_hits_created{engine="0",model_name="tiny"} 1.7e9
vllm:gpu_cache_usage_perc{engine="0",model_name="tiny"} 0.99
"""

LEGACY = """\
vllm:num_requests_running{model_name="tiny"} 1
vllm:num_requests_waiting{model_name="tiny"} 2
vllm:gpu_cache_usage_perc{model_name="tiny"} 0.75
vllm:gpu_prefix_cache_queries_total{model_name="tiny"} 10
vllm:gpu_prefix_cache_hits_total{model_name="tiny"} 5
"""


def test_current_names_are_summed_across_engine_label() -> None:
    m = parse_engine_metrics(CURRENT)
    assert m.running == 5 and m.waiting == 5
    assert m.kv_cache_usage == 0.375  # mean of DP ranks; the legacy name is ignored
    assert m.prefix_cache_queries == 100 and m.prefix_cache_hits == 40
    assert m.prefix_cache_hit_rate == 0.4


def test_falls_back_to_names_of_older_vllm() -> None:
    m = parse_engine_metrics(LEGACY)
    assert (m.running, m.waiting, m.kv_cache_usage) == (1, 2, 0.75)
    assert m.prefix_cache_hit_rate == 0.5


def test_garbage_and_label_values_with_spaces_are_tolerated() -> None:
    text = 'vllm:num_requests_waiting{model_name="a b} c"} 7\nvllm:num_requests_running oops\n'
    m = parse_engine_metrics(text)
    assert m.waiting == 7 and m.running == 0
