"""Targets from Prometheus' service-discovery formats: `targets_file` (file_sd), `targets_url`
(http_sd) and `targets_srv` (dns_sd, type SRV), one check per target found.

`manager` keeps one `discoverer` per discovered check across reloads; a discoverer refreshes its
source (`files`, `requests`) and makes the checks of the targets it found.
"""
