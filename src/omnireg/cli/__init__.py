"""The ``omnireg`` command line: the only place that configures logging and prints progress."""
