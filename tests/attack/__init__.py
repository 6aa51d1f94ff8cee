"""The attack and fault suite: what a hostile client or a failing dependency does to the relay.

Loopback only, bounded in count and time; docs/reliability.md gives the figures of a full run.
"""
