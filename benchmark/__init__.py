"""Paper metrics for RealFill results: one script per metric plus the benchmark suite."""
