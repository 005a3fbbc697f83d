"""One module per job kind: <Kind>Input, <Kind>Params, <Kind>Result."""
