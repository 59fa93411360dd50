"""Preprocessing behind ``rud_preprocess``: crop, normalise, resample and store; the inverse for boxes.

`retinaunet.preprocessing.preprocess.preprocess_case` prepares one case in memory (also for new images at
prediction time), `retinaunet.preprocessing.task.preprocess_task` runs the stage over a task.
"""
