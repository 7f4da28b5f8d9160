"""SpaceMusic's pure domain: events, money, pricing and the deal fold.

Standard library only: no I/O, no clock, no id generation. Callers pass those in.
"""
