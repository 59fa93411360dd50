"""Public datasets and other label formats -> the raw layout (``rud_convert``).

One module per source: :mod:`.luna16`, :mod:`.lidc`, :mod:`.seg2det` (semantic maps), :mod:`.labels`
(boxes and points); :mod:`.writer` writes the task folder, :mod:`.shapes` paints objects.
"""

from retinaunet.convert.writer import CASE_NAMES, ConvertError, Summary, TaskWriter, case_id, load_case_names

__all__ = ["CASE_NAMES", "ConvertError", "Summary", "TaskWriter", "case_id", "load_case_names"]
