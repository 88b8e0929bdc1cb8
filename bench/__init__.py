"""Benchmarks (`make bench`): cold start, warm overhead, cache hit and layer size, side by side with LiteLLM.

Run with ``python -m bench.run``; results land in ``bench/results/``. Not part of ``make test``.
"""
