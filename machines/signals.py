"""Signals other apps listen to, so that machines does not depend on them."""

from __future__ import annotations

from django.dispatch import Signal

# A venv slot of a machine became READY (a reset or a provisioning finished). Sent with
# ``machine_id``; the app that runs tests starts the runs waiting for that machine.
slot_freed = Signal()

# A check of a machine succeeded (it answers over SSH again). Sent with ``machine_id``; the app
# that runs tests stops the runners that outlived runs given up while it was away.
machine_answered = Signal()
