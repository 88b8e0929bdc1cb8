"""Streamed completions: the events a provider stream yields, the gateway's stream, and its framing.

The shapes here are shared by the provider adapters (``Provider.stream``), the routed stream
(``Gateway.open_stream``) and the HTTP edge that writes them as Server-Sent Events.
"""
