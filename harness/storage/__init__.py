"""harness.storage: see the README's layout table."""
