"""The tools that read runs: verify, compare, summarize (and the curves and statistics they
share)."""
