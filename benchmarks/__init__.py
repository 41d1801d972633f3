"""knm benchmarks: figures measured in one run (counts and ratios, see README)."""
