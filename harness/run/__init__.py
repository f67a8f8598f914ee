"""harness.run: see the README's layout table."""
