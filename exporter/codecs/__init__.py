"""Pure protocol codecs: bytes in, dataclasses out, no I/O. Each raises only its own error."""
