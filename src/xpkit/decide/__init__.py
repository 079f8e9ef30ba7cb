"""decide: moments -> effects per population, health gates, stopping rules, the decision.

Also the daily history (per-day estimates with always-valid inference) and power plans.
Knows the config and the statistics; nothing of SQL text or engines.
"""
