"""Runners: the Accelerate loop, suite execution, reports and the CLI."""
