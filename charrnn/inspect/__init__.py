"""Looking inside a model: unit probes, features and their terminal view."""
