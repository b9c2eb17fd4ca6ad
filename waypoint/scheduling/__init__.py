"""Cron scheduling: ``@DBOS.scheduled`` functions and schedules stored in the database."""
