"""harness.analysis: see the README's layout table."""
