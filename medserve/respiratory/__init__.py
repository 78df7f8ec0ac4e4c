"""Respiratory-disease triage (issue 20): a versioned knowledge base and two consult strategies.

`kb.py` loads and validates the YAML knowledge base, `consult.py` runs a stateless consult step
(the source's hypothesis-test cycle, or expected information gain). Pure Python: no service yet.
"""
