"""The base of the library: files, records, checkpoints, seeds, determinism, environment,
distributed set-up, loggers and the checks of received files. Imports nothing above it."""
