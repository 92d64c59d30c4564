"""The command line: flags -> options (prunekit.config) -> a job (prunekit.jobs) -> printed result."""
