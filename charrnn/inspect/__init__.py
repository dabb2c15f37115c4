"""Looking inside a model: unit probes, features and their terminal view; the long-range memory
task (how far back a cell remembers, and its gradient reaches)."""
