"""What the tests share, apart from the tests themselves.

Real daemons started on loopback for a test (dnsmasq, chronyd, Prometheus, headless Chromium,
a netsentry agent), fake servers for what a real one will not do on demand (DNS, NTP, HTTP,
line dialogs, a fault-injecting relay) built on one threaded-server skeleton, the one
certificate factory, a network namespace whose resolver is the test's own, and the helpers
that run a check and read its samples. `test_support.py` tests these helpers themselves.
"""
