"""robustness-harness: evaluate classifiers and test-time defenses against adversarial attacks."""

__version__ = "0.1.0"
