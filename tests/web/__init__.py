"""Tests of exporter/web/."""
