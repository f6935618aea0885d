"""The KV-routing benchmark: multi-round QA on a simulated PD fleet, one run per policy."""
