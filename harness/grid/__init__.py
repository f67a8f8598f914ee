"""harness.grid: see the README's layout table."""
