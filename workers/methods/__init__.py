"""One module per job kind, each with `run(lm, request, progress) -> <Kind>Result`."""
