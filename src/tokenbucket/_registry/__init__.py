"""The registry: one bucket per key, one or several named limits, and what acts on them.

``registry`` holds `BucketRegistry` (one limit); ``several`` its subclass for several named
limits, which ``BucketRegistry(...)`` builds when its default names several: the one line
below ties the two, so that neither module imports the other upward.
"""

from .registry import BucketRegistry
from .several import SeveralLimits

BucketRegistry._several = SeveralLimits
