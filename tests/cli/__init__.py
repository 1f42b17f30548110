"""Tests of exporter/cli/."""
