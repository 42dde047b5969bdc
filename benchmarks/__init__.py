"""ebmkit's benchmark harness: `python -m benchmarks.run`."""
