"""Tests of exporter/net/."""
