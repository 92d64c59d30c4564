"""The jobs the CLI runs, one file per command (train, eval, prune, sensitivity, compare, info, size, export, demo).

Each takes its command's validated options (:mod:`prunekit.config`) and returns a JSON-able result, so the CLI
only parses and prints, and the same jobs run from Python or a YAML recipe.
"""
