"""The backend-independent part of a ``SystemStore``, assembled from one mixin per concern."""

from __future__ import annotations

from waypoint.storage.sql_console import ConsoleSql
from waypoint.storage.sql_fleet import FleetSql
from waypoint.storage.sql_gauges import GaugesSql
from waypoint.storage.sql_listing import ListingSql
from waypoint.storage.sql_management import ManagementSql
from waypoint.storage.sql_messaging import MessagingSql
from waypoint.storage.sql_queues import QueueSql
from waypoint.storage.sql_workflows import WorkflowSql


class SqlStore(
    WorkflowSql, ListingSql, QueueSql, MessagingSql, ManagementSql, FleetSql, GaugesSql, ConsoleSql
):
    """Backends subclass this and supply connections, plus faster versions of hot paths."""
