"""Climate-occurrence mining (issue 20, system 3 of SOURCES.md): monthly case counts per ICD-10
code related to the month's mean-temperature class in the state of São Paulo.

One module per stage: `records` (the boundary types and the temperature classes), `tabnet` and
`inmet` (loaders of the real DATASUS and INMET CSV exports), `synthetic` (the documented stand-in
for both), `learner` (1R-style count ranges, ten folds), `rules` (what the service loads: cheap
to import, no sklearn or Ray). Training lives in `training/respiratory_rules.py`.
"""
