"""Runnable examples (percent-format notebooks): ``python -m mixlaw.examples.tutorial``."""
