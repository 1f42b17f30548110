"""Tests of exporter/config/."""
