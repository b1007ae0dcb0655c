"""Memory of the policy's own practice: experience -> insights (per problem) -> patterns (across problems).

`store` persists the three levels in one SQLite file, `patterns` consolidates insights into patterns,
`retrieve` packs the most useful memory for one problem under a token budget for the self-teacher, and
`inspection` says what `pmd memory show` and `stats` print.
"""
