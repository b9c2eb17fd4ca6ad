"""Every operation ``DBOS`` and ``DBOSClient`` share, declared once for both (``surface``
explains how one line gives a sync method, its async twin, and the right target for each)."""

from __future__ import annotations

from waypoint._api.ops import fleet, messages, queues, schedules
from waypoint._api.ops import workflows as wf
from waypoint._api.surface import (
    handle,
    handle_async,
    handles,
    handles_async,
    stream_twins,
    sync_only,
    twins,
)


class SharedOperations:
    """Subclasses say what the operations act on with ``_ops()`` (see ``surface``)."""

    # -- workflows ------------------------------------------------------------------------------
    retrieve_workflow, retrieve_workflow_async = twins(wf.retrieve_workflow, handle, handle_async)
    get_workflow_status, get_workflow_status_async = twins(wf.get_workflow_status)
    get_result, get_result_async = twins(wf.get_result)
    wait_first, wait_first_async = twins(wf.wait_first)
    list_workflows, list_workflows_async = twins(wf.list_workflows)
    list_queued_workflows, list_queued_workflows_async = twins(wf.list_queued_workflows)
    list_workflow_steps, list_workflow_steps_async = twins(wf.list_workflow_steps)
    cancel_workflow, cancel_workflow_async = twins(wf.cancel_workflow)
    cancel_workflows, cancel_workflows_async = twins(wf.cancel_workflows)
    resume_workflow, resume_workflow_async = twins(wf.resume_workflow, handle, handle_async)
    resume_workflows, resume_workflows_async = twins(wf.resume_workflows, handles, handles_async)
    fork_workflow, fork_workflow_async = twins(wf.fork_workflow, handle, handle_async)
    delete_workflow, delete_workflow_async = twins(wf.delete_workflow)
    delete_workflows, delete_workflows_async = twins(wf.delete_workflows)
    set_workflow_delay, set_workflow_delay_async = twins(wf.set_workflow_delay)
    update_workflow_attributes, update_workflow_attributes_async = twins(
        wf.update_workflow_attributes
    )

    # -- messages, events, streams --------------------------------------------------------------
    send, send_async = twins(messages.send)
    send_bulk, send_bulk_async = twins(messages.send_bulk)
    get_event, get_event_async = twins(messages.get_event)
    get_all_events, get_all_events_async = twins(messages.get_all_events)
    read_stream, read_stream_async = stream_twins(messages.read_stream)
    read_stream_offset, read_stream_offset_async = twins(messages.read_stream_offset)

    # -- queues ---------------------------------------------------------------------------------
    register_queue, register_queue_async = twins(queues.register_queue)
    retrieve_queue, retrieve_queue_async = twins(queues.retrieve_queue)
    delete_queue, delete_queue_async = twins(queues.delete_queue)
    list_queues, list_queues_async = twins(queues.list_queues)

    # -- schedules ------------------------------------------------------------------------------
    create_schedule, create_schedule_async = twins(schedules.create_schedule)
    list_schedules, list_schedules_async = twins(schedules.list_schedules)
    get_schedule, get_schedule_async = twins(schedules.get_schedule)
    delete_schedule, delete_schedule_async = twins(schedules.delete_schedule)
    apply_schedules, apply_schedules_async = twins(schedules.apply_schedules)
    pause_schedule = sync_only(schedules.pause_schedule)
    resume_schedule = sync_only(schedules.resume_schedule)
    backfill_schedule = sync_only(schedules.backfill_schedule, handles)
    trigger_schedule = sync_only(schedules.trigger_schedule, handle)

    # -- versions, executors, retention ---------------------------------------------------------
    list_application_versions, list_application_versions_async = twins(
        fleet.list_application_versions
    )
    get_latest_application_version, get_latest_application_version_async = twins(
        fleet.get_latest_application_version
    )
    set_latest_application_version, set_latest_application_version_async = twins(
        fleet.set_latest_application_version
    )
    list_executors, list_executors_async = twins(fleet.list_executors)
    garbage_collect, garbage_collect_async = twins(fleet.garbage_collect)
    global_timeout, global_timeout_async = twins(fleet.global_timeout)
