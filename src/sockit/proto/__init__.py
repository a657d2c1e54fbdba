"""L1: sans-I/O protocol cores: bytes in, messages or decisions out.

Receive buffer with limits, framing (lines, delimiters, length prefixes in network byte
order), the accept-errno policy and (later) the PROXY protocol codec. Nothing here may
import socket, selectors, threading, asyncio or sleep: every piece is unit-tested by
feeding it input split at every byte offset.
"""
