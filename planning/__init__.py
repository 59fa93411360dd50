"""Self-configuration: the dataset fingerprint and the planner behind ``rud_plan``.

`planning.pipeline.plan_task` runs the whole stage; `planning.fingerprint`, `planning.planner`,
`planning.topology`, `planning.anchors_plan` and `planning.memory` are its parts.
"""
