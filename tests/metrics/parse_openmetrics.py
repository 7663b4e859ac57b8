#!/usr/bin/env python3
"""Parses an OpenMetrics exposition from standard input with the reference parser of the
Python prometheus_client package (strict: types, units, suffixes, label syntax, # EOF).
Prints one line per family, "name type samples", and exits 1 on the first error."""
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    sys.exit("prometheus_client is not installed: python3 -m pip install prometheus_client")

text = sys.stdin.read()
try:
    families = list(text_string_to_metric_families(text))
except Exception as e:  # the parser raises ValueError and friends
    sys.exit(f"not valid OpenMetrics: {e}")
if not families:
    sys.exit("no metric families")
for f in families:
    print(f"{f.name} {f.type} {len(f.samples)}")
