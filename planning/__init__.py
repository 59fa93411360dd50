"""Self-configuration: the dataset fingerprint and the planner behind ``rud_plan``.

Installed as ``retinaunet.planning``. `pipeline.plan_task` runs the whole stage; `fingerprint`, `planner`,
`topology`, `coverage`, `anchors_plan` and `memory` are its parts.
"""
