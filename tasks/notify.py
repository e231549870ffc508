"""The failure notification of the deployments: a Prefect automation that POSTs to ``orchestrate.notify_url``
when one of their flow runs ends Failed or Crashed.

An automation, not a flow-run hook: the server fires it, so it also reports a run whose process
died (Crashed: killed, out of memory, the machine gone), where an ``on_crashed`` hook in that
process never runs. The POST is a small JSON object (the payload template below): the flow run's
name, id, state and state message, which names every failed threshold when the quality gate failed,
and the deployment's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

AUTOMATION = "cycleaug-failed-runs"
WEBHOOK_BLOCK = "cycleaug-notify"

# Rendered by the server (Jinja) with the flow run and deployment of the event; tojson quotes the message.
PAYLOAD = (
    '{"flow_run_name": {{ flow_run.name | tojson }}, "flow_run_id": "{{ flow_run.id }}", '
    '"state": {{ flow_run.state.name | tojson }}, "message": {{ (flow_run.state.message or "") | tojson }}, '
    '"deployment": {{ deployment.name | tojson }}}'
)


def ensure_failure_automation(url: str | None, deployment_ids: Sequence[UUID | str]) -> UUID | None:
    """Create or update the automation that POSTs to ``url`` on Failed and Crashed runs of ``deployment_ids``.

    ``url`` None deletes an automation made before, so clearing ``orchestrate.notify_url`` stops the
    posts. The webhook URL lives in the Webhook block ``cycleaug-notify`` (a secret field), not in the
    automation. Returns the automation's id (None when there is none).
    """
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION)
        if url is None:
            for automation in existing:
                client.delete_automation(automation.id)
            return None
        block_id = Webhook(url=url, method="POST", headers={"Content-Type": "application/json"}).save(
            WEBHOOK_BLOCK, overwrite=True)
        automation = AutomationCore(
            name=AUTOMATION,
            description="POST to orchestrate.notify_url when a CycleAug deployment's run fails or crashes.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "deployment",
                               "prefect.resource.id": [f"prefect.deployment.{d}" for d in deployment_ids]},
                posture=Posture.Reactive, threshold=1, within=0,
            ),
            actions=[CallWebhook(block_document_id=block_id, payload=PAYLOAD)],
        )
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            return existing[0].id
        return client.create_automation(automation)
