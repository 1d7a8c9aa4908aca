"""The frozen reference decoder the throughput benchmark compares against."""

from .decoder import ReferenceSpiralConv, ReferenceSpiralDecoder, ReferenceUpSample

__all__ = ["ReferenceSpiralConv", "ReferenceSpiralDecoder", "ReferenceUpSample"]
