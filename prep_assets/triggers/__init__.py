"""Domain code of the triggers besides the tier schedules: stale systems and their alerts, new
commits in the infra repo, and firing Prometheus alerts.

Nothing here imports Dagster; the sensors in ``prep_assets.defs`` call these functions.
"""
