"""Dispatch's pure logic (the assignment engine lives here).

Must not import any I/O framework.
"""
