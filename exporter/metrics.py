"""Every metric name, type, label set and help text of netsentry, in one place.

Checks record observations against these specs; the exposition module renders them; dashboards,
alert rules and the README are checked against this list by the tests. Names follow the contract
in DESIGN.md: base units, counters end in `_total`, no sample timestamps.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from dataclasses import dataclass, field

from exporter.native_histograms import Native

GAUGE = "gauge"
COUNTER = "counter"
HISTOGRAM = "histogram"


_DEFINED = itertools.count()

# Which samples a run recorded, in order: each one's metric and label values (those after
# `check` and `kind`). Their values travel beside them as a tuple of numbers, from the run
# (`Run`) to the store (`Result`, `CheckState`) and the renderer, in this one shape.
Series = tuple[tuple["Spec", tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family. `labels` are the kind-specific labels after `check` and `kind`."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...] = ()
    # A histogram's upper bounds, +Inf implied (a kind's histograms only; the runner's own
    # histograms name theirs where they are kept).
    buckets: tuple[float, ...] = ()
    # The order the specs were defined in: the kinds' families render in it, whichever kinds
    # declare them, so the exposition's order follows this file and needs no list of its own.
    order: int = field(default_factory=_DEFINED.__next__, compare=False, repr=False)


LAST_RUN = "as of the last scheduled run"

# --- per check, owned by the runner -----------------------------------------------------------

CHECK_SUCCESS = Spec(
    "netsentry_check_success", GAUGE, f"1 if the check succeeded, 0 if it failed, {LAST_RUN}."
)
CHECK_DURATION = Spec(
    "netsentry_check_duration_seconds", HISTOGRAM, "Duration of the check's runs in seconds."
)
CHECK_RUNS = Spec("netsentry_check_runs_total", COUNTER, "Runs of the check since it was loaded.")
CHECK_FAILURES = Spec(
    "netsentry_check_failures_total",
    COUNTER,
    "Failed runs of the check by reason; every reason the check's kind can produce starts at 0.",
    ("reason",),
)
CHECK_LAST_RUN = Spec(
    "netsentry_check_last_run_timestamp_seconds",
    GAUGE,
    "Unix time at which the check's last run finished.",
)
CHECK_LAST_SUCCESS = Spec(
    "netsentry_check_last_success_timestamp_seconds",
    GAUGE,
    "Unix time at which the check's last successful run finished.",
)
CHECK_INTERVAL = Spec(
    "netsentry_check_interval_seconds", GAUGE, "Configured interval between the check's runs."
)
CHECK_INFO = Spec(
    "netsentry_check_info", GAUGE, "Always 1; carries the check's target.", ("target",)
)
SCHEDULER_MISSED = Spec(
    "netsentry_scheduler_missed_runs_total",
    COUNTER,
    "Planned runs of the check that did not start within their grace time.",
)
SCHEDULER_SKIPPED = Spec(
    "netsentry_scheduler_skipped_runs_total",
    COUNTER,
    "Planned runs of the check skipped because its previous run was still in flight.",
)

# --- per check, recorded by the check kinds ------------------------------------------------------
# A kind lists the specs it records (`Kind.specs`); the registry derives the families from them.

DNS_LOOKUP = Spec(
    "netsentry_dns_lookup_seconds", GAUGE, f"Time spent resolving the target, {LAST_RUN}."
)
DNS_ANSWERS = Spec(
    "netsentry_dns_answers", GAUGE,
    f"Answers of the asked type (addresses for the system resolver), {LAST_RUN}.",
)
DNS_MIN_TTL = Spec(
    "netsentry_dns_min_ttl_seconds", GAUGE,
    f"Smallest TTL among the answers and the CNAMEs leading to them, {LAST_RUN}.",
)
DNS_AUTHENTICATED = Spec(
    "netsentry_dns_authenticated_data", GAUGE,
    f"1 if the reply had the AD (DNSSEC authenticated data) flag, {LAST_RUN}.",
)
DNS_RESPONSES = Spec(
    "netsentry_dns_responses_total", COUNTER, "Replies from the nameserver, by rcode.",
    ("rcode",),
)
DNS_ANSWER_CHANGES = Spec(
    "netsentry_dns_answer_changes_total", COUNTER,
    "Runs whose answers differed from those of the previous run that had answers.",
)
DNS_RESOLVER_MISMATCH = Spec(
    "netsentry_dns_resolver_mismatch", GAUGE,
    f"1 if the system resolver's addresses differed from the nameserver's answers, {LAST_RUN}.",
)
DNS_IGNORED_REPLIES = Spec(
    "netsentry_dns_ignored_replies_total", COUNTER,
    "UDP datagrams ignored while waiting for the reply: wrong ID, wrong source or garbage.",
)
TCP_CONNECT = Spec(
    "netsentry_tcp_connect_seconds", GAUGE, f"Time to establish the TCP connection, {LAST_RUN}."
)
TCP_RTT = Spec(
    "netsentry_tcp_rtt_seconds", GAUGE,
    f"Smoothed round-trip time of the connection (TCP_INFO, Linux), {LAST_RUN}.",
)
TCP_RTTVAR = Spec(
    "netsentry_tcp_rttvar_seconds", GAUGE,
    f"Round-trip time variation of the connection (TCP_INFO, Linux), {LAST_RUN}.",
)
TCP_RETRANSMITS = Spec(
    "netsentry_tcp_retransmits", GAUGE,
    f"Segments the connection retransmitted (TCP_INFO total_retrans, Linux), {LAST_RUN}.",
)
TCP_SND_CWND = Spec(
    "netsentry_tcp_snd_cwnd", GAUGE,
    f"Congestion window of the connection in segments (TCP_INFO, Linux), {LAST_RUN}.",
)
TCP_PMTU = Spec(
    "netsentry_tcp_pmtu_bytes", GAUGE,
    f"Path MTU of the connection (TCP_INFO, Linux), {LAST_RUN}.",
)
TLS_HANDSHAKE = Spec(
    "netsentry_tls_handshake_seconds", GAUGE, f"Time spent in the TLS handshake, {LAST_RUN}."
)
TLS_CERT_EXPIRY = Spec(
    "netsentry_tls_cert_expiry_timestamp_seconds", GAUGE,
    f"Unix time at which the first certificate of the peer's chain expires, {LAST_RUN}.",
)
TLS_VERSION = Spec(
    "netsentry_tls_version_info", GAUGE, f"Always 1; the TLS version negotiated, {LAST_RUN}.",
    ("version",),
)
HTTP_PHASE = Spec(
    "netsentry_http_phase_seconds", GAUGE,
    f"Time spent in each phase of the HTTP request (all redirects summed), {LAST_RUN}.",
    ("phase",),
)
HTTP_STATUS = Spec(
    "netsentry_http_status_code", GAUGE, f"HTTP status code of the final response, {LAST_RUN}."
)
HTTP_RESPONSE_BYTES = Spec(
    "netsentry_http_response_bytes", GAUGE,
    f"Length of the final response body after decompression, {LAST_RUN}.",
)
HTTP_REDIRECTS = Spec(
    "netsentry_http_redirects", GAUGE, f"Redirects followed, {LAST_RUN}."
)
HTTP_VERSION = Spec(
    "netsentry_http_version", GAUGE,
    f"The HTTP version of the final response (1.0, 1.1 or 2), {LAST_RUN}.",
)
WEBSOCKET_HANDSHAKE = Spec(
    "netsentry_websocket_handshake_seconds", GAUGE,
    "Time from the WebSocket upgrade request sent to the 101 response read and verified, "
    f"{LAST_RUN}.",
)
GRPC_HEALTH_STATUS = Spec(
    "netsentry_grpc_healthcheck_status", GAUGE,
    "1 for the serving status the gRPC health service reported (SERVING, NOT_SERVING, UNKNOWN, "
    f"SERVICE_UNKNOWN), 0 for the others, {LAST_RUN}.",
    ("status",),
)
GRPC_STATUS_CODE = Spec(
    "netsentry_grpc_status_code", GAUGE,
    f"The gRPC status code of the health check call (0 is OK), {LAST_RUN}.",
)
NTP_OFFSET = Spec(
    "netsentry_ntp_offset_seconds", GAUGE,
    "How far the NTP server's clock is ahead of this host's (RFC 5905 theta, best sample by "
    f"delay; with several servers the truechimers' combined offset), {LAST_RUN}.",
)
NTP_RTT = Spec(
    "netsentry_ntp_rtt_seconds", GAUGE,
    f"Round-trip delay to the NTP server of the sample used (RFC 5905 delta), {LAST_RUN}.",
)
NTP_STRATUM = Spec("netsentry_ntp_stratum", GAUGE, f"Stratum of the NTP server, {LAST_RUN}.")
NTP_LEAP = Spec(
    "netsentry_ntp_leap", GAUGE,
    "Leap indicator of the NTP server: 0 none, 1 a second inserted at the end of the day, "
    f"2 one deleted, {LAST_RUN}.",
)
NTP_ROOT_DELAY = Spec(
    "netsentry_ntp_root_delay_seconds", GAUGE,
    f"Round-trip delay from the NTP server to its primary reference, {LAST_RUN}.",
)
NTP_ROOT_DISPERSION = Spec(
    "netsentry_ntp_root_dispersion_seconds", GAUGE,
    f"Dispersion the NTP server reports relative to its primary reference, {LAST_RUN}.",
)
NTP_ROOT_DISTANCE = Spec(
    "netsentry_ntp_root_distance_seconds", GAUGE,
    "Root distance (RFC 5905 lambda): the most the server's time can be off from its primary "
    f"reference as seen from here, {LAST_RUN}.",
)
NTP_PRECISION = Spec(
    "netsentry_ntp_precision_seconds", GAUGE,
    f"Precision of the NTP server's clock, {LAST_RUN}.",
)
NTP_REFERENCE = Spec(
    "netsentry_ntp_reference_info", GAUGE,
    "Always 1; the NTP server's reference ID (a clock source at stratum 1, the upstream "
    f"server's IPv4 address or hash above), {LAST_RUN}.", ("refid",),
)
NTP_SANITY = Spec(
    "netsentry_ntp_sanity", GAUGE,
    "1 if the NTP reply was valid, its root distance under max_root_distance and the offset "
    f"under max_offset, 0 otherwise, {LAST_RUN}.",
)
NTP_KISS_OF_DEATH = Spec(
    "netsentry_ntp_kiss_of_death_total", COUNTER,
    "Kiss-o'-Death replies from the NTP servers, by code (RATE, DENY, RSTR, ... or OTHER).",
    ("code",),
)
NTP_FALSETICKER = Spec(
    "netsentry_ntp_falseticker", GAUGE,
    "1 if the NTP server's offset disagreed with the majority of the check's servers "
    f"(RFC 5905 intersection algorithm), 0 if it agreed, {LAST_RUN}.", ("server",),
)
NTP_IGNORED_REPLIES = Spec(
    "netsentry_ntp_ignored_replies_total", COUNTER,
    "UDP datagrams ignored while waiting for an NTP reply: wrong source, wrong origin, wrong "
    "mode, short, or bad timestamps.",
)
TCP_SND_MSS = Spec(
    "netsentry_tcp_snd_mss_bytes", GAUGE,
    f"Maximum segment size the connection sends (TCP_INFO snd_mss, Linux), {LAST_RUN}.",
)
SOCKET_OPTION_REQUESTED = Spec(
    "netsentry_socket_option_requested", GAUGE,
    "Value of the socket option as the check's config requests it.", ("option",),
)
SOCKET_OPTION_VALUE = Spec(
    "netsentry_socket_option_value", GAUGE,
    "Value of the socket option read back from a new socket once the requested options are "
    f"set (Linux reports SO_SNDBUF and SO_RCVBUF doubled), {LAST_RUN}.", ("option",),
)
SOCKET_OPTION_SATISFIED = Spec(
    "netsentry_socket_option_satisfied", GAUGE,
    f"1 if the requested socket option took effect, 0 if it fell short, {LAST_RUN}.",
    ("option",),
)
SOCKET_CONNECTED_OPTION_VALUE = Spec(
    "netsentry_socket_connected_option_value", GAUGE,
    f"Value of the socket option read back once the socket is connected, {LAST_RUN}.",
    ("option",),
)
SOCKET_KERNEL_SETTING = Spec(
    "netsentry_socket_kernel_setting", GAUGE,
    f"Kernel setting behind socket options, from /proc/sys, {LAST_RUN}.", ("setting",),
)
CLOCK_SYNCHRONIZED = Spec(
    "netsentry_clock_synchronized", GAUGE,
    "1 if the kernel says its clock is synchronised (adjtimex: STA_UNSYNC clear, state not "
    f"TIME_ERROR), {LAST_RUN}.",
)
CLOCK_ESTIMATED_ERROR = Spec(
    "netsentry_clock_estimated_error_seconds", GAUGE,
    f"The kernel clock's estimated error, as the time daemon last set it (adjtimex), {LAST_RUN}.",
)
CLOCK_MAX_ERROR = Spec(
    "netsentry_clock_max_error_seconds", GAUGE,
    "The kernel clock's maximum error (adjtimex): grows by 500 ppm until the time daemon "
    f"resets it; 16 s and more means unsynchronised, {LAST_RUN}.",
)
CLOCK_FREQUENCY = Spec(
    "netsentry_clock_frequency_adjustment_ratio", GAUGE,
    "How much faster (+) or slower (-) than nominal the kernel runs the clock, freq and tick "
    f"together (adjtimex; 1e-05 is 10 ppm), {LAST_RUN}.",
)
CLOCK_TAI_OFFSET = Spec(
    "netsentry_clock_tai_offset_seconds", GAUGE,
    f"TAI - UTC as the kernel knows it (adjtimex); absent while it is unset (0), {LAST_RUN}.",
)
CLOCK_STATE = Spec(
    "netsentry_clock_state", GAUGE,
    "1 for the kernel clock's state (adjtimex: ok, ins and del for a leap second due today, "
    f"oop during one, wait after one, error), 0 for the others, {LAST_RUN}.", ("state",),
)

# --- the network path: ping, path (traceroute), udp -------------------------------------------

# Round trips of echo replies, smokeping_prober's scale: 50 us doubling to 26 s (20 buckets).
RTT_BUCKETS = tuple(0.00005 * 2**i for i in range(20))

PING_SENT = Spec(
    "netsentry_ping_packets_sent_total", COUNTER, "ICMP echo requests sent.",
)
PING_RECEIVED = Spec(
    "netsentry_ping_packets_received_total", COUNTER,
    "ICMP echo replies received in time, each echo counted once (duplicates are not).",
)
PING_DUPLICATES = Spec(
    "netsentry_ping_duplicates_total", COUNTER,
    "Echo replies received again for an echo that already had its reply.",
)
PING_ERRORS = Spec(
    "netsentry_ping_icmp_errors_total", COUNTER,
    "ICMP errors about the check's own echoes, by type (unreachable, time_exceeded, "
    "packet_too_big, parameter_problem, other); the hop that sent one is a detail of the run.",
    ("type",),
)
PING_IGNORED = Spec(
    "netsentry_ping_ignored_total", COUNTER,
    "ICMP messages ignored while waiting for replies, by why: other (an echo of someone else, "
    "or an error about a datagram the check never sent), late (a reply after its slot), "
    "malformed.", ("why",),
)
PING_LOSS = Spec(
    "netsentry_ping_loss_ratio", GAUGE,
    f"Share of the echoes that had no reply in time (0 to 1), {LAST_RUN}.",
)
PING_RTT = Spec(
    "netsentry_ping_rtt_seconds", HISTOGRAM,
    "Round-trip times of every echo reply, smokeping-style buckets from 50 us.",
    buckets=RTT_BUCKETS,
)
PING_RTT_MIN = Spec(
    "netsentry_ping_rtt_min_seconds", GAUGE, f"Shortest round trip of the replies, {LAST_RUN}."
)
PING_RTT_MEAN = Spec(
    "netsentry_ping_rtt_mean_seconds", GAUGE, f"Mean round trip of the replies, {LAST_RUN}."
)
PING_RTT_MAX = Spec(
    "netsentry_ping_rtt_max_seconds", GAUGE, f"Longest round trip of the replies, {LAST_RUN}."
)
PING_RTT_STDDEV = Spec(
    "netsentry_ping_rtt_stddev_seconds", GAUGE,
    f"Standard deviation of the replies' round trips (ping's mdev), {LAST_RUN}.",
)
PING_REPLY_TTL = Spec(
    "netsentry_ping_reply_ttl", GAUGE,
    f"TTL (IPv4) or hop limit (IPv6) of the last echo reply as it arrived, {LAST_RUN}.",
)
PATH_HOPS = Spec(
    "netsentry_path_hops", GAUGE,
    f"Hops to the destination (its TTL distance); the hops probed when not reached, {LAST_RUN}.",
)
PATH_REACHED = Spec(
    "netsentry_path_reached", GAUGE, f"1 if the destination answered a probe, {LAST_RUN}."
)
PATH_CHANGES = Spec(
    "netsentry_path_changes_total", COUNTER,
    "Runs whose sequence of responding hop addresses differed from the previous run's.",
)
PATH_HOP_RTT = Spec(
    "netsentry_path_hop_rtt_seconds", GAUGE,
    f"Median round trip of the answered probes to each hop (1 = the first router), {LAST_RUN}.",
    ("hop",),
)
PATH_HOP_LOSS = Spec(
    "netsentry_path_hop_loss_ratio", GAUGE,
    f"Share of the probes to each hop that had no answer (0 to 1), {LAST_RUN}.", ("hop",),
)
UDP_RESPONSE = Spec(
    "netsentry_udp_response_seconds", GAUGE,
    f"Time from sending the datagram to the reply that matched, {LAST_RUN}.",
)
UDP_RESPONSE_BYTES = Spec(
    "netsentry_udp_response_bytes", GAUGE, f"Length of the reply that matched, {LAST_RUN}."
)

# --- /probe: one run now, in an exposition of its own (no check or kind labels) -------------

PROBE_SUCCESS = Spec("netsentry_probe_success", GAUGE, "1 if the probe succeeded, 0 if it failed.")
PROBE_DURATION = Spec(
    "netsentry_probe_duration_seconds", GAUGE, "How long the probe took, in seconds."
)
PROBE_FAILURE_REASON = Spec(
    "netsentry_probe_failure_reason", GAUGE,
    "1 for the reason the probe failed, 0 for the other reasons its kind can fail with.",
    ("reason",),
)
PROBE_SPECS: tuple[Spec, ...] = (PROBE_SUCCESS, PROBE_DURATION, PROBE_FAILURE_REASON)

# --- the agent itself ----------------------------------------------------------------------------

BUILD_INFO = Spec(
    "netsentry_build_info", GAUGE, "Always 1; the running version.", ("version", "python_version")
)
HOST_INFO = Spec("netsentry_host_info", GAUGE, "Always 1; the host's name.", ("hostname",))
CONFIG_RELOAD_OK = Spec(
    "netsentry_config_last_reload_successful",
    GAUGE,
    "1 if the last config load or reload succeeded, 0 if the running config is an older one.",
)
CONFIG_RELOAD_TIME = Spec(
    "netsentry_config_last_reload_success_timestamp_seconds",
    GAUGE,
    "Unix time of the last successful config load or reload.",
)
WEB_CONFIG_RELOAD_OK = Spec(
    "netsentry_web_config_last_reload_successful",
    GAUGE,
    "1 if the web config file (--web.config.file) and the certificate, key and CA files it "
    "names are in effect as they are on disk, 0 if a change failed to load and older ones "
    "serve. Absent without a web config file.",
)
CHECKS_IN_FLIGHT = Spec("netsentry_checks_in_flight", GAUGE, "Check runs in progress right now.")
CHECKS_CONFIGURED = Spec(
    "netsentry_checks_configured", GAUGE, "Checks in the running config, by kind.", ("kind",)
)
SCHEDULER_LAG = Spec(
    "netsentry_scheduler_lag_seconds",
    HISTOGRAM,
    "Delay between a run's planned start and its actual start.",
)
CLOCK_STEPS = Spec(
    "netsentry_clock_steps_total",
    COUNTER,
    "Wall-clock steps (against the monotonic clock) seen and answered by rescheduling.",
)
SHARD_CHECKS = Spec(
    "netsentry_shard_checks", GAUGE,
    "Checks of the config file that this agent runs: those of its shard (--shard I/N) by "
    "rendezvous hashing of their names; shard 0 of 1 runs them all.", ("shard", "shards"),
)
# Service discovery (`targets_file`, `targets_url`, `targets_srv`), per discovered check.
DISCOVERY_TARGETS = Spec(
    "netsentry_discovery_targets", GAUGE,
    "Targets of the check's source that this agent runs now: its shard's, without the "
    "refused ones; summed over the shards, all of them.", ("check", "source"),
)
DISCOVERY_REFRESH_OK = Spec(
    "netsentry_discovery_last_refresh_successful", GAUGE,
    "1 if the last refresh of the source succeeded, 0 if it failed (the targets are the last "
    "good ones); for files, 0 while any file of the glob is one that does not parse. Absent "
    "before the first refresh.", ("check", "source"),
)
DISCOVERY_REFRESH_TIME = Spec(
    "netsentry_discovery_last_refresh_success_timestamp_seconds", GAUGE,
    "Unix time of the source's last successful refresh.", ("check", "source"),
)
DISCOVERY_REFRESH_FAILURES = Spec(
    "netsentry_discovery_refresh_failures_total", COUNTER,
    "Refreshes of the source that failed (a file that did not parse counts once, when it "
    "changed).", ("check", "source"),
)
DISCOVERY_REFUSED = Spec(
    "netsentry_discovery_refused_targets", GAUGE,
    "Targets of the source refused as of the last refresh: a target the kind cannot take, or "
    "every target of a group whose labels break the label rules (the log says why).",
    ("check", "source"),
)

# Histogram buckets. Run durations span sub-millisecond loopback connects to multi-second
# timeouts: a 1-2.5-10 scale keeps the per-check histogram to 12 series (it is about half of
# all series at scale). Lag must resolve the 100 ms goal finely; it is one histogram in all.
DURATION_BUCKETS = (0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CHECK_SPECS: tuple[Spec, ...] = (
    CHECK_SUCCESS,
    CHECK_DURATION,
    CHECK_RUNS,
    CHECK_FAILURES,
    CHECK_LAST_RUN,
    CHECK_LAST_SUCCESS,
    CHECK_INTERVAL,
    CHECK_INFO,
    SCHEDULER_MISSED,
    SCHEDULER_SKIPPED,
)
AGENT_SPECS: tuple[Spec, ...] = (
    BUILD_INFO,
    HOST_INFO,
    CONFIG_RELOAD_OK,
    CONFIG_RELOAD_TIME,
    WEB_CONFIG_RELOAD_OK,
    CHECKS_IN_FLIGHT,
    CHECKS_CONFIGURED,
    SCHEDULER_LAG,
    CLOCK_STEPS,
    SHARD_CHECKS,
    DISCOVERY_TARGETS,
    DISCOVERY_REFRESH_OK,
    DISCOVERY_REFRESH_TIME,
    DISCOVERY_REFRESH_FAILURES,
    DISCOVERY_REFUSED,
)
# The kinds' metrics are the ones the registry's kinds declare: `exporter.checks.kind_specs()`.


class Histogram:
    """A histogram of the agent's own (not per check), updated on the event loop only."""

    def __init__(self, bounds: tuple[float, ...], schema: int = 3) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; +Inf last
        self.sum = 0.0
        self.native = Native(schema)  # the same values in native buckets
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.native = self.native.add(value)

    def rescale(self, schema: int) -> None:
        """Native buckets of another schema: those so far are dropped (the classic ones stay)."""
        if schema != self.native.schema:
            self.native = Native(schema)
