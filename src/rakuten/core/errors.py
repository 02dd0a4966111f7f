"""One exception type for expected failures (bad input, bad params, missing weights).

Stage scripts run through :func:`rakuten.core.stage.run_stage`, which turns a
:class:`PipelineError` into a single line on stderr and exit code 2 instead of a traceback.
"""


class PipelineError(Exception):
    """An expected, user-fixable failure. The message is one line naming file/row/column/key
    and what was expected."""
