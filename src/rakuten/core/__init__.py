"""Plumbing every layer uses: errors, logging, atomic io, params and knob declarations, the numeric policy, process
pools, artifact integrity, the stage entry wrapper.
"""
