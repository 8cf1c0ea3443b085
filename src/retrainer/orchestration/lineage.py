"""OpenLineage for retrainer's tasks, through Airflow's OpenLineage provider.

Registered as a custom extractor ([openlineage] extractors =
retrainer.orchestration.lineage.RetrainerExtractor) for TaskFlow tasks: when a task completes,
its input and output datasets come from `steps.lineage.task_lineage` applied to the task's
XCom result. The provider adds the run, job and parent-run facets (each task run's parent is
its DAG run) and sends the events through the configured transport. Nothing is emitted unless
a transport is configured (the provider stays disabled).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.openlineage.extractors.base import BaseExtractor, OperatorLineage
from openlineage.client.event_v2 import Dataset

EXTRACTOR = f"{__name__}.RetrainerExtractor"


class RetrainerExtractor(BaseExtractor):
    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["_PythonDecoratedOperator"]

    def _execute_extraction(self) -> OperatorLineage | None:
        return OperatorLineage()  # at start nothing is known yet: the result names the data

    def extract_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        from retrainer.config.settings import get_settings
        from retrainer.steps.lineage import UPSTREAM, task_lineage

        task_id = self.operator.task_id
        model = str(self.operator.dag_id).rsplit("_", 1)[0]  # <model>_<kind>
        result = task_instance.xcom_pull(task_ids=task_id)
        upstream = {t: task_instance.xcom_pull(task_ids=t) for t in UPSTREAM.get(task_id, [])}
        found = task_lineage(get_settings(), model, task_id, result, upstream)
        return OperatorLineage(
            inputs=[Dataset(namespace=d.namespace, name=d.name) for d in found.inputs],
            outputs=[Dataset(namespace=d.namespace, name=d.name) for d in found.outputs],
        )
