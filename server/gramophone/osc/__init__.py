"""OSC over UDP and TCP: message decoding and validation, stream framing, sockets (no torch; the client imports it)."""
