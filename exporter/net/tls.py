"""TLS on a connected socket: client contexts and the handshake driven on the loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from exporter.net.ready import wait_ready


def tls_client_context(
    ca_file: str | None = None, insecure_skip_verify: bool = False,
    alpn: tuple[str, ...] = (),
) -> ssl.SSLContext:
    """A TLS client context: the system's roots, or only `ca_file`'s; TLS 1.2 at least;
    offering the `alpn` protocols in that order, if any ("h2", "http/1.1").

    Build it once per configuration, not per run: loading the system's roots takes
    milliseconds.
    """
    if insecure_skip_verify:
        # No roots loaded at all: nothing would be verified against them.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_file)
    # RFC 8310 §9 and BCP 195 (RFC 9325 §3.1.1): nothing older than TLS 1.2.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


async def tls_handshake(sock: socket.socket, context: ssl.SSLContext,
                        server_hostname: str) -> ssl.SSLSocket:
    """TLS over a connected non-blocking socket, the handshake driven on the loop.

    The returned SSLSocket owns the connection from now on (`sock` is detached into it; the
    caller closes the SSLSocket). This path is for a handshake and nothing or little after
    it: asyncio's TLS transport allocates a 256 KiB read buffer per connection, which costs
    about a third of a check that only wants the handshake and the certificate.
    """
    loop = asyncio.get_running_loop()
    tls = context.wrap_socket(sock, server_hostname=server_hostname,
                              do_handshake_on_connect=False)
    try:
        for _ in range(1000):  # a handshake takes a few round trips; the deadline bounds time
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                await wait_ready(loop, tls.fileno(), write=False)
            except ssl.SSLWantWriteError:
                await wait_ready(loop, tls.fileno(), write=True)
        raise ssl.SSLError("the TLS handshake did not complete in 1000 steps")
    except BaseException:
        tls.close()
        raise
