"""Side-by-side evaluation: datasets, pipelines, metrics, statistics and reports."""
