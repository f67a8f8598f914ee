"""Built-in plugins. They register through the ``harness`` entry points in pyproject.toml, like a third party's."""
